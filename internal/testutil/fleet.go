package testutil

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Fleet tokens of the provider configuration ServeProvider writes.
const (
	FleetAdminToken   = "admin-token-0123456789"
	FleetBackendToken = "gce-token-0123456789"
	FleetClientToken  = "alice-token-0123456789"
)

// ServeProvider runs `gcefleet serve` (the binary gcefleet) as a process
// with a provider of its own database and the tokens above (admin ops,
// backend gce, client alice) and, if fleet is not empty, a GCE Backend
// with fleet as its configuration file. It returns the provider's URL;
// the process is killed when the test ends.
func ServeProvider(t testing.TB, gcefleet, fleet string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := "listen: 127.0.0.1:0\ndatabase: " + filepath.Join(dir, "p.db") + `
tokens:
  - {name: ops, role: admin, token: ` + FleetAdminToken + `}
  - {name: gce, role: backend, token: ` + FleetBackendToken + `, pool: true}
  - {name: alice, role: client, token: ` + FleetClientToken + `}
`
	if fleet != "" {
		if err := os.WriteFile(filepath.Join(dir, "fleet.yaml"), []byte(fleet), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += "backend: {config: fleet.yaml, token: gce}\n"
	}
	path := filepath.Join(dir, "provider.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, out := StartProcess(t, nil, gcefleet, "serve", "--config", path)
	line, err := out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "http://") {
		t.Fatalf("gcefleet serve printed %q, not its URL: %v", line, err)
	}
	go io.Copy(io.Discard, out)
	return strings.TrimSpace(line)
}

// PoolFleet returns a GCE Backend configuration of one group of warm
// gceboot machines (template "warm", dimension os=linux, e2-standard-2)
// in project and zone on the emulator at endpoint, whose containers run
// image, between minimum and maximum machines.
func PoolFleet(endpoint, project, zone, image string, minimum, maximum int) string {
	return `templates:
  - base_name: warm
    project: ` + project + `
    dimensions: {os: linux}
    machine_type: e2-standard-2
    container_image: ` + image + `
    gceboot: true
    service_accounts: [{email: default, scopes: ["https://www.googleapis.com/auth/cloud-platform"]}]
managers:
  - {template_base_name: warm, zone: ` + zone + `, minimum_size: ` + strconv.Itoa(minimum) + `, maximum_size: ` + strconv.Itoa(maximum) + `}
settings:
  interval: 1s
  compute_endpoint: ` + endpoint + "\n"
}
