package rpc

import (
	"bytes"
	"encoding/gob"
	"reflect"
	"testing"
)

type poolPoint struct {
	X, Y int
	Tag  string
}

type poolShape struct {
	Name   string
	Points []poolPoint
	Any    any
}

func init() { gob.Register(poolPoint{}) }

// TestDecoderPool decodes a mix of bodies, each a fresh gob stream as
// clients send them, through one pool, and checks each against a fresh
// decoder: primed decoders must never change what a body means.
func TestDecoderPool(t *testing.T) {
	values := []any{
		42, "hello", [2]int{1, 2},
		poolPoint{1, 2, "a"}, poolPoint{3, 4, "b"},
		poolShape{Name: "tri", Points: []poolPoint{{1, 1, "x"}}, Any: poolPoint{9, 9, "in an interface"}},
		poolShape{Name: "empty"},
		poolShape{Name: "int inside", Any: 7},
		map[string][]byte{"k": []byte("v")},
	}
	var p decoderPool
	for round := range 3 {
		for _, v := range values {
			var buf bytes.Buffer
			if err := gob.NewEncoder(&buf).Encode(v); err != nil {
				t.Fatal(err)
			}
			got := reflect.New(reflect.TypeOf(v))
			if err := p.decode(buf.Bytes(), got.Interface()); err != nil {
				t.Fatalf("round %d, %T: %v", round, v, err)
			}
			if !reflect.DeepEqual(got.Elem().Interface(), v) {
				t.Errorf("round %d: decoded %#v, want %#v", round, got.Elem().Interface(), v)
			}
		}
	}
	if len(p.ready) == 0 {
		t.Error("the pool kept no decoders")
	}
	// A body of another type under the same definitions fails cleanly.
	var buf bytes.Buffer
	gob.NewEncoder(&buf).Encode(poolPoint{1, 2, "a"})
	var wrong []string
	if err := p.decode(buf.Bytes(), &wrong); err == nil {
		t.Error("decoding a struct into a slice succeeded")
	}
}
