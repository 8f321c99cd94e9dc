package bigmachine

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
)

// goneSystem starts one machine at addr that is gone before it answers.
type goneSystem struct {
	testSystem
	addr string
}

func (s goneSystem) Start(context.Context, StartRequest) ([]Spec, error) {
	return []Spec{{Name: "m-0", Addr: s.addr, Maxprocs: 1}}, nil
}
func (goneSystem) KeepaliveFailed(context.Context, *Machine) (bool, error) {
	return true, errors.New("gone")
}
func (goneSystem) HTTPClient(*tls.Config) *http.Client {
	return &http.Client{Transport: failingTransport{}}
}

type failingTransport struct{}

func (failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("no route to host")
}

// TestCompressionStartsWhenAMachineIsRemote: a machine whose address is
// not on loopback will take the compressed binary, so the driver starts
// compressing as soon as the system returns it, before it answers (a cold
// cloud machine boots for 20 s and more meanwhile); a machine on loopback
// starts nothing. The machines here are gone before they answer, so only
// that early start could compress.
func TestCompressionStartsWhenAMachineIsRemote(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		compress Compression
		want     bool
	}{
		{"192.0.2.1:443", CompressAcrossNetworks, true},
		{"192.0.2.1:443", CompressAlways, true},
		{"192.0.2.1:443", CompressNever, false},
		{"127.0.0.1:443", CompressAcrossNetworks, false},
		{"127.0.0.1:443", CompressAlways, false}, // only once shipped
		{"[::1]:443", CompressAcrossNetworks, false},
	} {
		done := make(chan struct{})
		compress := func(string) ([]byte, error) {
			close(done)
			return []byte("compressed"), nil
		}
		b := Start(goneSystem{addr: tc.addr}, WithCompression(tc.compress), WithCompressor(compress), WithOutput(io.Discard))
		binary, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Start(context.Background(), 1, Binary(binary)); err == nil {
			t.Fatalf("%s: a gone machine started", tc.addr)
		}
		b.zmu.Lock()
		_, started := b.zcache[binary]
		b.zmu.Unlock()
		if started != tc.want {
			t.Errorf("machine at %s, compression %d: compression started %v, want %v", tc.addr, tc.compress, started, tc.want)
		}
		if started {
			testutil.Receive(t, 10*time.Second, "the compression", done)
		}
		b.Shutdown()
	}
}
