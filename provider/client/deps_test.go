package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoDatabaseDriver keeps the Go client free of the store: a
// program that calls the API must not link SQLite or PostgreSQL's driver.
func TestLinksNoDatabaseDriver(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, bad := range []string{"sqlite", "pgx", "database/sql", "gcefleet/store"} {
			if strings.Contains(pkg, bad) {
				t.Errorf("provider/client depends on %s: keep it to package api's types", pkg)
			}
		}
	}
}
