package backend_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/backend"
)

// TestDimensionsTheProviderRefuses: a template's dimensions that the
// provider would refuse at cataloging (a key of another form, an empty
// key, a control character, an overlong value, too many keys) are refused
// at load, at the template's line, rather than after its group is made.
func TestDimensionsTheProviderRefuses(t *testing.T) {
	many := make([]string, 60)
	for i := range many {
		many[i] = fmt.Sprintf("k%d: v", i)
	}
	for _, tc := range []struct{ dims, want string }{
		{`{os: "li\x1b[31mnux"}`, "fleet.yaml:2: template pool: dimension os: values: printable characters only"},
		{`{os: linux, "": x}`, `fleet.yaml:2: template pool: dimension key "": keys start with a lowercase letter`},
		{`{OS: linux}`, `fleet.yaml:2: template pool: dimension key "OS": keys start with a lowercase letter`},
		{`{os: ""}`, "fleet.yaml:2: template pool: dimension os: values are 1 to 255 bytes"},
		{`{os: ` + strings.Repeat("x", 256) + `}`, "fleet.yaml:2: template pool: dimension os: values are 1 to 255 bytes"},
		{`{` + strings.Join(many, ", ") + `}`, "fleet.yaml:2: template pool: 60 dimensions, and the backend adds 9 of its own: at most 64 in all"},
	} {
		yaml := strings.Replace(poolTemplate, "dimensions: {os: linux}", "dimensions: "+tc.dims, 1)
		if _, err := backend.ParseConfig("fleet.yaml", []byte(yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("dimensions %.60s: %v; want %s", tc.dims, err, tc.want)
		}
	}
	if _, err := backend.ParseConfig("fleet.yaml", []byte(strings.Replace(poolTemplate, "dimensions: {os: linux}", "dimensions: {os: linux, pool.tier_2-x: \"ci, fast\"}", 1))); err != nil {
		t.Errorf("good dimensions refused: %v", err)
	}
}
