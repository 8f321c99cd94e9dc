package rpc

import (
	"bytes"
	"encoding/gob"
	"errors"
	"io"
	"sync"
)

// Each call's body is a fresh gob stream: the definitions of the types it
// uses, then the value. A fresh gob.Decoder compiles a decoding engine for
// every type it meets, which costs more than the decoding itself. A
// decoderPool keeps decoders that have already read a given run of type
// definitions, keyed by those definitions' bytes; a later body that starts
// with the same definitions has only its value decoded, by such a decoder.
// Identical definition bytes mean identical type ids, so this is exactly
// what a decoder reading both bodies as one stream would do.
type decoderPool struct {
	mu    sync.Mutex
	ready map[string][]*primed
}

// primed is a decoder that has read one run of type definitions.
type primed struct {
	src *bytes.Reader // swapped for each body; a ByteReader, so gob reads exactly one message
	dec *gob.Decoder
}

const (
	maxPrimedKinds = 1024 // distinct definition runs kept
	maxPrimedEach  = 64   // decoders kept per run
)

// decode decodes the gob stream body into v.
func (p *decoderPool) decode(body []byte, v any) error {
	defs, value, ok := splitDefinitions(body)
	if !ok || len(defs) == 0 {
		return gob.NewDecoder(bytes.NewReader(body)).Decode(v)
	}
	key := string(defs)
	pd := p.get(key)
	if pd == nil {
		pd = &primed{src: bytes.NewReader(body)}
		pd.dec = gob.NewDecoder(pd.src)
	} else {
		pd.src.Reset(value)
	}
	if err := pd.dec.Decode(v); err != nil {
		return err
	}
	if pd.src.Len() == 0 {
		p.put(key, pd)
	}
	return nil
}

func (p *decoderPool) get(key string) *primed {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.ready[key]
	if len(list) == 0 {
		return nil
	}
	pd := list[len(list)-1]
	p.ready[key] = list[:len(list)-1]
	return pd
}

func (p *decoderPool) put(key string, pd *primed) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ready == nil {
		p.ready = map[string][]*primed{}
	}
	list, known := p.ready[key]
	if !known && len(p.ready) >= maxPrimedKinds || len(list) >= maxPrimedEach {
		return
	}
	p.ready[key] = append(list, pd)
}

// splitDefinitions splits a gob stream into its leading type definitions
// (messages with a negative type id) and the rest.
func splitDefinitions(b []byte) (defs, rest []byte, ok bool) {
	off := 0
	for off < len(b) {
		n, w, err := gobUint(b[off:])
		if err != nil || n > uint64(len(b)-off-w) {
			return nil, nil, false
		}
		msg := b[off+w : off+w+int(n)]
		id, _, err := gobUint(msg)
		if err != nil {
			return nil, nil, false
		}
		if id&1 == 0 { // a non-negative id: a value, not a definition
			return b[:off], b[off:], true
		}
		off += w + int(n)
	}
	return b, nil, true
}

// gobUint decodes gob's unsigned integer encoding: one byte below 128,
// else a negated byte count and that many big-endian bytes.
func gobUint(b []byte) (uint64, int, error) {
	if len(b) == 0 {
		return 0, 0, io.ErrUnexpectedEOF
	}
	if b[0] < 0x80 {
		return uint64(b[0]), 1, nil
	}
	n := -int(int8(b[0]))
	if n > 8 || len(b) < 1+n {
		return 0, 0, errors.New("bad gob length")
	}
	var x uint64
	for _, c := range b[1 : 1+n] {
		x = x<<8 | uint64(c)
	}
	return x, 1 + n, nil
}
