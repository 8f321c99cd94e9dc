package bigmachine

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/internal/testutil"
)

// TestRunnable: a binary built against a newer C library than the
// machine's (here /bin/true made to need a version of it that no C library
// has) is refused with a reason; the binary as it is runs.
func TestRunnable(t *testing.T) {
	bin, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if err := runnable("/bin/true"); err != nil {
		t.Fatalf("/bin/true as it is: %v", err)
	}
	const have, want = "GLIBC_2.", "GLIBC_9."
	if !bytes.Contains(bin, []byte(have)) {
		testutil.Lacks(t, "the GNU C library (/bin/true needs no "+have+"* symbol versions)")
	}
	newer := filepath.Join(t.TempDir(), "true")
	if err := os.WriteFile(newer, bytes.ReplaceAll(bin, []byte(have), []byte(want)), 0o755); err != nil {
		t.Fatal(err)
	}
	err = runnable(newer)
	if err == nil || !strings.Contains(err.Error(), "the binary needs "+want) || !strings.Contains(err.Error(), "from libc.so.6, which this machine's does not have") {
		t.Errorf("a binary that needs a newer C library: %v", err)
	}
}
