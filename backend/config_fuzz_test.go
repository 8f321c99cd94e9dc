package backend_test

import (
	"bytes"
	"fmt"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gcefleet/gcefleet/backend"
)

// fleetLine is what every line of a configuration error looks like.
var fleetLine = regexp.MustCompile(`^fleet\.yaml:[1-9][0-9]*: \S`)

// FuzzParseConfig: the backend's configuration file, whatever its bytes,
// parses or is refused with messages that each name the file and a line;
// one that parses says the same when written out and parsed again, and is
// usable as it says: sizes, rates and durations in range.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		good,
		"",
		// The README's example.
		"templates:\n  - base_name: linux-8\n    project: my-project\n    dimensions: {os: linux, cpus: \"8\"}\n" +
			"    machine_type: e2-standard-8\n    image: projects/debian-cloud/global/images/family/debian-12\n" +
			"managers:\n  - {template_base_name: linux-8, zone: us-central1-a, minimum_size: 2, maximum_size: 50}\n" +
			"settings: {interval: 1m, compute_rate: 20}\n",
		"settings: {compute_rate: .nan}\n",
		"settings: {compute_rate: -.inf}\n",
		"settings: {compute_rate: -1}\n",
		"settings: {audit_grace: -1h}\n",
		"settings: {interval: 2562047h47m16.854775807s}\n",
		"managers:\n  - {template_base_name: x, zone: us-central1-a, minimum_size: -9223372036854775808, maximum_size: 9223372036854775807}\n",
		"templates:\n  - {base_name: a, disk: {size_gb: 99999999999999999999}}\n",
		"templates:\n  - {base_name: \"\\0\", labels: {\"\\xff\": \"\\x00\"}}\n",
		"templates:\n  - {base_name: a, metadata_from_files: {k: /nonexistent}, metadata: {k: v}}\n",
		"templates:\n  - {base_name: a, labels: {A: x, B: y, C: z, D: w}, metadata_from_files: {a: /no/a, b: /no/b, c: /no/c}}\n",
		"templates: &t [{base_name: a}]\nmanagers: *t\n",
		"templates:\n  - &a {base_name: a}\n  - *a\n",
		"templates: {}\nmanagers: []\nsettings: []\n",
		"templates: [" + strings.Repeat("[", 5000) + "\n",
		good + "---\ntemplates: []\n",
		scheduled,
		idleFleet,
		poolTemplate + "managers:\n  - {template_base_name: pool, zone: us-central1-a, maximum_size: 3, min_idle: 9, idle_timeout: -1s, schedules: [{days: [xyz], hours: \"25:61-\", time_zone: Local}, {days: [sun], hours: \"22:00-06:00\", time_zone: Asia/Tokyo, min_idle: 1}]}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer hangWatch(data)()
		cfg, err := backend.ParseConfig("fleet.yaml", data)
		if _, again := backend.ParseConfig("fleet.yaml", data); fmt.Sprint(again) != fmt.Sprint(err) {
			t.Errorf("the same file parsed twice says\n%v\nthen\n%v", err, again)
		}
		if err != nil {
			for line := range strings.SplitSeq(err.Error(), "\n") {
				if !fleetLine.MatchString(line) {
					t.Errorf("error line %q is not of the form fleet.yaml:LINE: message (whole error %q)", line, err)
				}
			}
			return
		}
		if s := cfg.Settings; !(s.ComputeRate > 0) || math.IsInf(s.ComputeRate, 1) || s.AuditGrace < 0 || s.Interval < time.Second {
			t.Errorf("accepted settings %+v", s)
		}
		for _, m := range cfg.Managers {
			if m.MinimumSize < 0 || m.MaximumSize > backend.MaxGroupSize || m.MinimumSize > m.MaximumSize || m.MinIdle < 0 || m.MinIdle > m.MaximumSize || m.IdleTimeout < 0 {
				t.Errorf("accepted manager %+v", m)
			}
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshalling a parsed config: %v", err)
		}
		again, err := backend.ParseConfig("fleet.yaml", out)
		if err != nil {
			t.Fatalf("a parsed config written out does not parse: %v\n%s", err, out)
		}
		if out2, _ := yaml.Marshal(again); !bytes.Equal(out, out2) {
			t.Fatalf("a parsed config written out parses differently:\n%s\nthen\n%s", out, out2)
		}
	})
}

// hangWatch crashes the process if an input is not done with within a few
// seconds: the fuzzer saves a crashing input, but not a slow one.
func hangWatch(data []byte) (stop func()) {
	t := time.AfterFunc(5*time.Second, func() {
		panic(fmt.Sprintf("took more than 5s: %q", data))
	})
	return func() { t.Stop() }
}
