package provider_test

import (
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/provider"
)

// TestConfigRefusesWhatCannotWork: settings that parse but could never
// work are refused, each with its file and line.
func TestConfigRefusesWhatCannotWork(t *testing.T) {
	const tok = "tokens:\n  - {name: a, role: admin, token: x-x-x-x-x-x-x-x-x-x}\n"
	for _, tc := range []struct{ yaml, want string }{
		{"tokens:\n  - {name: a, role: admin, token: \"0123456789abcdef0 \"}\n", `cfg.yaml:2: token "a": the secret has spaces at its start or end`},
		{"tokens:\n  - {name: a, role: admin, token: \" 0123456789abcdef0\"}\n", `cfg.yaml:2: token "a": the secret has spaces`},
		{"tokens:\n  - {name: \"a\\e[31m\", role: admin, token: 0123456789abcdef0}\n", `cfg.yaml:2: token name "a\x1b[31m": printable characters only`},
		{tok + "listen: 127.0.0.1:99999\n", `cfg.yaml:3: listen "127.0.0.1:99999": the port is a number from 0 to 65535`},
		{tok + "listen: localhost\n", `cfg.yaml:3: listen "localhost": give host:port`},
		{tok + "database: mysql://db/fleet\n", `cfg.yaml:3: database: a URL of scheme "mysql"`},
		{tok + "database: https://db/fleet\n", `cfg.yaml:3: database: a URL of scheme "https"`},
	} {
		_, err := provider.ParseConfig("cfg.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: %v; want %q", tc.yaml, err, tc.want)
		}
	}
	for _, ok := range []string{tok + "listen: \"[::1]:0\"\n", tok + "database: postgres://u@h/db\n", tok + "database: sqlite:/tmp/x.db\n"} {
		if _, err := provider.ParseConfig("cfg.yaml", []byte(ok)); err != nil {
			t.Errorf("config %q: %v; want it accepted", ok, err)
		}
	}
}
