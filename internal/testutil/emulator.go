package testutil

import (
	"net/http/httptest"
	"testing"

	"github.com/gcefleet/gcefleet/emulator"
)

// Emulator starts a Compute Engine emulator with opts for the test and
// returns it with its base URL (the Cloud Client Library's endpoint); it is
// closed, with every instance process, when the test ends.
func Emulator(t testing.TB, opts emulator.Options) (*emulator.Emulator, string) {
	t.Helper()
	emu := emulator.New(opts)
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		emu.Close()
		srv.Close()
	})
	return emu, srv.URL
}
