package provider_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/provider"
)

// TestConfigSecretsPrivate: a configuration that writes a secret in
// itself must be readable by its owner alone; one that names its secrets'
// files or variables may be read by anyone.
func TestConfigSecretsPrivate(t *testing.T) {
	const inline = "tokens:\n  - {name: ops, role: admin, token_file: admin.token}\n  - {name: gce, role: backend, token: gce-secret-0123456789}\n"
	const byFile = "tokens:\n  - {name: ops, role: admin, token_file: admin.token}\n"
	for _, tc := range []struct {
		name    string
		config  string
		mode    os.FileMode
		wantErr string
	}{
		{"an inline secret in a file others can read", inline, 0o644, `provider.yaml:3: token "gce" is written in this file, which other users can read (mode 0644): chmod 600`},
		{"an inline secret in a file its group can read", inline, 0o640, "(mode 0640)"},
		{"an inline secret in a private file", inline, 0o600, ""},
		{"secrets in files, the config readable by all", byFile, 0o644, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte("admin-secret-0123456789\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			conf := filepath.Join(dir, "provider.yaml")
			if err := os.WriteFile(conf, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			// WriteFile's mode is masked by the umask; Chmod is not.
			if err := os.Chmod(conf, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := provider.LoadConfig(conf)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("LoadConfig: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("LoadConfig: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestConfigTLS: the API's certificate and key are named together, and a
// pair that does not load is an error on the tls line.
func TestConfigTLS(t *testing.T) {
	const head = "tokens:\n  - {name: ops, role: admin, token_env: HOME}\n"
	for _, tc := range []struct{ name, tls, wantErr string }{
		{"a certificate without its key", "tls: {cert_file: provider.pem}\n", "provider.yaml:3: tls: give both cert_file"},
		{"files that are not there", "tls: {cert_file: no.pem, key_file: no.key}\n", "provider.yaml:3: tls: open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			conf := filepath.Join(dir, "provider.yaml")
			if err := os.WriteFile(conf, []byte(head+tc.tls), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := provider.LoadConfig(conf); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("LoadConfig: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
