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
			"fleet.yaml:3: settings.compute_rate -1: the Compute API calls per second per project must be above 0",
			"fleet.yaml:4: settings.audit_grace -1h0m0s is negative",
		}},
		{"gceboot without what it needs", `templates:
  - base_name: ok
    project: my-project
    dimensions: {os: linux}
    machine_type: e2-standard-2
    image: debian-12
  - base_name: warm
    project: my-project
    dimensions: {os: linux, gceboot: "false"}
    machine_type: e2-standard-2
    image: debian-12
    gceboot: true
    metadata: {gcefleet-pool: "{}"}
`, []string{
			"fleet.yaml:7: template warm: gceboot: true needs container_image",
			"fleet.yaml:7: template warm: gceboot: true needs a service account",
			"fleet.yaml:7: template warm: metadata gcefleet-pool is the backend's own",
			"fleet.yaml:7: template warm: dimension gceboot is the backend's own",
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

// TestConfigErrorsTeach: each problem of a file is reported, alone, at its
// own line: an endpoint without a scheme, a compute_rate not above 0, a
// manager without maximum_size, a file with no templates, and values of
// the wrong type alongside the file's other problems.
func TestConfigErrorsTeach(t *testing.T) {
	const tmpl = `templates:
  - base_name: pool
    project: my-project
    dimensions: {os: linux}
    machine_type: e2-standard-2
    image: projects/debian-cloud/global/images/family/debian-12
`
	for _, tc := range []struct {
		name, yaml string
		want       []string // the whole error, line by line
	}{
		{"endpoint without a scheme", tmpl + "settings:\n  compute_endpoint: 127.0.0.1:8780\n", []string{
			`fleet.yaml:8: settings.compute_endpoint "127.0.0.1:8780" is not a URL with a scheme: write http://127.0.0.1:8780 for the emulator, or leave it out for real GCE`}},
		{"endpoint not a URL", tmpl + "settings:\n  interval: 30s\n  compute_endpoint: emulator\n", []string{
			`fleet.yaml:9: settings.compute_endpoint "emulator" is not a URL with a scheme: write http://127.0.0.1:8780 for the emulator, or leave it out for real GCE`}},
		{"compute_rate 0", tmpl + "settings:\n  compute_rate: 0\n", []string{
			`fleet.yaml:8: settings.compute_rate 0: the Compute API calls per second per project must be above 0, e.g. compute_rate: 20 (the default)`}},
		{"compute_rate negative", tmpl + "settings:\n  compute_rate: -5\n", []string{
			`fleet.yaml:8: settings.compute_rate -5: the Compute API calls per second per project must be above 0, e.g. compute_rate: 20 (the default)`}},
		{"no maximum_size", tmpl + "managers:\n  - {template_base_name: pool, zone: us-central1-a, minimum_size: 1}\n", []string{
			`fleet.yaml:8: manager of pool in us-central1-a: maximum_size is required: the most instances the group may have, at least 1, e.g. maximum_size: 10`}},
		{"empty file", "", []string{
			`fleet.yaml:1: no templates: declare the instance templates under templates:, each with base_name, project, machine_type, image (or container_image) and dimensions`}},
		{"only comments", "# nothing yet\n", []string{
			`fleet.yaml:1: no templates: declare the instance templates under templates:, each with base_name, project, machine_type, image (or container_image) and dimensions`}},
		{"a type error and other problems", tmpl + `managers:
  - {template_base_name: pool, zone: moon, minimum_size: 1, maximum_size: ten}
settings:
  interval: soon
  endpoint: nowhere
`, []string{
			`fleet.yaml:8: "ten" is not a number`,
			`fleet.yaml:8: manager of pool: zone "moon" is not a zone such as us-central1-a`,
			`fleet.yaml:10: "soon" is not a duration: write a number with a unit, such as 90s, 15m or 720h`,
			`fleet.yaml:11: settings.compute_endpoint "nowhere" is not a URL with a scheme: write http://127.0.0.1:8780 for the emulator, or leave it out for real GCE`,
		}},
		{"a tab", "templates:\n  - base_name: pool\n\tproject: my-project\n", []string{
			`fleet.yaml:3: a tab indents this line: YAML indents with spaces only`}},
	} {
		_, err := backend.ParseConfig("fleet.yaml", []byte(tc.yaml))
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("%s: error\n%s\nwant\n%s", tc.name, err, strings.Join(tc.want, "\n"))
		}
	}
	if cfg, err := backend.ParseConfig("fleet.yaml", []byte(tmpl+"settings:\n  compute_endpoint: http://127.0.0.1:8780\n  compute_rate: 2.5\n")); err != nil || cfg.Settings.Endpoint != "http://127.0.0.1:8780" || len(cfg.Warnings) != 0 {
		t.Errorf("an endpoint URL and a compute_rate of 2.5: %v, %q, warnings %q", err, cfg.Settings.Endpoint, cfg.Warnings)
	}
	// The old key still works, with a warning that says what to write.
	cfg, err := backend.ParseConfig("fleet.yaml", []byte(tmpl+"settings:\n  endpoint: http://127.0.0.1:8780\n"))
	if err != nil || cfg.Settings.Endpoint != "http://127.0.0.1:8780" || strings.Join(cfg.Warnings, "\n") != "fleet.yaml:8: settings.endpoint is deprecated: write compute_endpoint: http://127.0.0.1:8780" {
		t.Errorf("settings.endpoint: %v, %q, warnings %q", err, cfg.Settings.Endpoint, cfg.Warnings)
	}
}
