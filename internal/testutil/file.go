package testutil

import (
	"os"
	"testing"
)

// WriteFile writes data to path, readable by its owner alone, and ends
// the test if it cannot: a test whose input was not written tests nothing.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
