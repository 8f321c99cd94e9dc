package provider_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gcefleet/gcefleet/provider"
)

// TestConfigPathsAreRelativeToTheFile: token_file, database and
// backend.config name files beside the configuration, wherever serve is
// started.
func TestConfigPathsAreRelativeToTheFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte("admin-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "provider.yaml")
	if err := os.WriteFile(conf, []byte(`database: sqlite:fleet.db
backend: {config: backend.yaml, token: gce}
tokens:
  - {name: ops, role: admin, token_file: admin.token}
  - {name: gce, role: backend, token: gce-secret-0123456789}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // somewhere else
	cfg, err := provider.LoadConfig(conf)
	if err != nil {
		t.Fatalf("a config read from another directory: %v", err)
	}
	if cfg.Tokens[0].Token != "admin-secret-0123456789" {
		t.Errorf("token_file read %q", cfg.Tokens[0].Token)
	}
	if want := "sqlite:" + filepath.Join(dir, "fleet.db"); cfg.Database != want {
		t.Errorf("database %q, want %q", cfg.Database, want)
	}
	if want := filepath.Join(dir, "backend.yaml"); cfg.Backend == nil || cfg.Backend.Config != want {
		t.Errorf("backend.config %+v, want %q", cfg.Backend, want)
	}
}
