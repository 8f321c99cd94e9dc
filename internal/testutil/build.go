package testutil

import (
	"fmt"
	"os/exec"
	"path"
	"path/filepath"
	"testing"
)

// GoBuild builds the main package pkg (an import path) into a directory of
// the test's and returns the binary's path.
func GoBuild(t testing.TB, pkg string) string {
	t.Helper()
	out, err := GoBuildTo(t.TempDir(), pkg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// GoBuildTo builds the main package pkg into dir, for a TestMain that
// shares one binary among its tests.
func GoBuildTo(dir, pkg string) (string, error) {
	out := filepath.Join(dir, path.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}
