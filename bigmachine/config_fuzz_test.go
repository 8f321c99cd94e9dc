package bigmachine_test

import (
	"reflect"
	"testing"

	"github.com/gcefleet/gcefleet/bigmachine"
)

// FuzzDecodeWorkerConfig: whatever bytes reach a worker as its
// configuration, decoding never panics, and what it accepts encodes and
// decodes to the same configuration.
func FuzzDecodeWorkerConfig(f *testing.F) {
	good := bigmachine.WorkerConfig{Name: "m-1", Listen: "127.0.0.1:0", Cert: []byte("cert"), Key: []byte("key"), CA: []byte("ca")}
	f.Add(good.Encode())
	f.Add("")
	f.Add("e30")                  // {}
	f.Add("bnVsbA")               // null
	f.Add("W10")                  // []
	f.Add("!!!not base64")        //
	f.Add(good.Encode()[:10])     // cut short
	f.Add(good.Encode() + "AAAA") // trailing bytes
	f.Fuzz(func(t *testing.T, s string) {
		c, err := bigmachine.DecodeWorkerConfig(s)
		if err != nil {
			return
		}
		again, err := bigmachine.DecodeWorkerConfig(c.Encode())
		if err != nil {
			t.Fatalf("an accepted configuration does not decode again: %v", err)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("decode(encode(c)) = %+v, want %+v", again, c)
		}
	})
}
