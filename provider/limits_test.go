package provider_test

import (
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/provider"
)

func TestMaxConnectionsConfig(t *testing.T) {
	const base = "tokens:\n  - {name: ops, role: admin, token: admin-secret-0123456789}\n"
	if cfg, err := provider.ParseConfig("p.yaml", []byte(base+"max_connections: 500\n")); err != nil || cfg.MaxConnections != 500 {
		t.Errorf("max_connections: 500: %+v, %v", cfg.MaxConnections, err)
	}
	for _, bad := range []string{"max_connections: 5\n", "max_connections: -1\n"} {
		if _, err := provider.ParseConfig("p.yaml", []byte(base+bad)); err == nil || !strings.Contains(err.Error(), "max_connections") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
