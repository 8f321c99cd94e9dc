package claim

import (
	"context"
	"crypto"
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/provider/api"
)

// TestPresentNeedsAConnection: a catalog entry without an address, port
// or fleet CA is refused before anything is sent, with what is missing.
func TestPresentNeedsAConnection(t *testing.T) {
	sign := func(crypto.PublicKey) ([]byte, error) { t.Fatal("signed"); return nil, nil }
	for _, tc := range []struct {
		conn api.Connection
		want string
	}{
		{api.Connection{Port: 8443, CACert: "x"}, "no address and port"},
		{api.Connection{Address: "127.0.0.1", CACert: "x"}, "no address and port"},
		{api.Connection{Address: "127.0.0.1", Port: 70000, CACert: "x"}, "no address and port"},
		{api.Connection{Address: "127.0.0.1", Port: 8443}, "no fleet CA certificate"},
	} {
		_, err := Present(context.Background(), tc.conn, "m-1", "tok", []byte("ca"), sign)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "m-1") {
			t.Errorf("Present(%+v) = %v, want an error saying %q of m-1", tc.conn, err, tc.want)
		}
	}
}
