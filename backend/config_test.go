package backend_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/backend"
)

func TestGoodConfig(t *testing.T) {
	cfg, err := backend.ParseConfig("fleet.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Templates) != 2 || len(cfg.Managers) != 3 || cfg.Settings.Interval != 30*time.Second || cfg.Settings.ComputeRate != 20 {
		t.Errorf("parsed %+v", cfg)
	}
	if cfg.Templates[1].Line != 9 || cfg.Managers[2].Line != 18 {
		t.Errorf("lines: template 2 at %d, manager 3 at %d", cfg.Templates[1].Line, cfg.Managers[2].Line)
	}
}

// TestBadConfig: a bad file is refused with every problem, each at its line.
func TestBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown field", "templates:\n  - base_name: a\n    machine_typ: e2-small\n", []string{`fleet.yaml:3: unknown key "machine_typ"`}},
		{"everything wrong at once", `templates:
  - base_name: dup
    project: my-project
    dimensions: {os: linux}
    machine_type: e2-standard-8
    image: debian-12
  - base_name: dup
    project: P
    machine_type: big-machine
    image: x
    container_image: y
managers:
  - {template_base_name: dup, zone: us-central1-a, minimum_size: 5, maximum_size: 2}
  - {template_base_name: dup, zone: us-central1-a, minimum_size: 0, maximum_size: 2000}
  - {template_base_name: ghost, zone: moon-1, minimum_size: 0, maximum_size: 1}
`, []string{
			`fleet.yaml:7: base_name "dup" is declared already at line 2`,
			`fleet.yaml:7: template dup: project "P" is not a project id`,
			`fleet.yaml:7: template dup: machine_type "big-machine" is not a machine type`,
			"fleet.yaml:7: template dup: give exactly one of image",
			"fleet.yaml:7: template dup: no dimensions",
			"fleet.yaml:13: manager of dup in us-central1-a: minimum_size 5 is above maximum_size 2",
			"fleet.yaml:14: a manager of dup in us-central1-a is declared already at line 13",
			"fleet.yaml:14: manager of dup in us-central1-a: maximum_size 2000 is above 1000",
			`fleet.yaml:15: manager: template_base_name "ghost" names no template (templates: dup)`,
			`fleet.yaml:15: manager of ghost: zone "moon-1" is not a zone`,
		}},
		// Found by FuzzParseConfig: these were accepted.
		{"settings out of range", "settings:\n  interval: 30s\n  compute_rate: -1\n  audit_grace: -1h\n", []string{
			"fleet.yaml:3: settings.compute_rate -1: Compute calls a second per project, a positive number",
			"fleet.yaml:4: settings.audit_grace -1h0m0s is negative",
		}},
		{"rate not a number", "settings: {compute_rate: .nan}\n", []string{"fleet.yaml:1: settings.compute_rate NaN"}},
		{"interval too short, at its line", "templates: []\nsettings:\n  interval: 10ms\n", []string{"fleet.yaml:3: settings.interval 10ms: at least 1s"}},
	} {
		_, err := backend.ParseConfig("fleet.yaml", []byte(tc.yaml))
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error lacks %q:\n%v", tc.name, w, err)
			}
		}
	}
}
