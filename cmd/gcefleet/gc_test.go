package main

import (
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/internal/testutil"
)

// TestGCRefusesAnInstanceWithoutARun: an instance a list of bigmachine
// instances finds but that names no run is not gc's to delete; gc says so,
// fails, and still deletes the runs' instances beside it.
func TestGCRefusesAnInstanceWithoutARun(t *testing.T) {
	_, url, svc := startEmulator(t)
	insert(t, svc, "us-central1-a", "bigm-rold-0001", map[string]string{"gcefleet-role": "bigmachine", "gcefleet-run": "rold"})
	insert(t, svc, "us-central1-a", "bigm-norun", map[string]string{"gcefleet-role": "bigmachine"})
	code, out, stderr := runCLI(t, map[string]string{"GCEFLEET_COMPUTE_ENDPOINT": url}, "gc", "--project", "p-gc", "--older-than", "0s")
	if code == 0 || !strings.Contains(stderr, "refusing to delete bigm-norun: it carries no gcefleet-run label") {
		t.Errorf("gc of an instance without a run: exit %d, %q, stderr %q", code, out, stderr)
	}
	testutil.WaitFor(t, "gc's deletion of bigm-rold-0001", func() bool { return names(t, svc) == "bigm-norun" })
}
