package testutil

import (
	"fmt"
	"os"
	"testing"
)

// Lacks stops a test that this system cannot run, saying what it lacks: it
// fails when CI=true, where nothing may be skipped, and is skipped loudly
// otherwise, as PostgresURL is.
func Lacks(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal("this system lacks " + what)
	}
	loud(fmt.Sprintf("%s: SKIPPED, this system lacks %s\n", t.Name(), what))
	t.Skip("SKIPPED: this system lacks " + what)
}
