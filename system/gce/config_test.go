package gce_test

import (
	"flag"
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/system/gce"
)

// TestEveryFlagHasItsVariable: each -gce.NAME flag is set by GCEFLEET_NAME,
// and its help says so; the old -gce.endpoint still works, with a notice.
func TestEveryFlagHasItsVariable(t *testing.T) {
	t.Setenv("GCEFLEET_MACHINE_TYPE", "e2-small")
	t.Setenv("GCEFLEET_SPOT", "maybe")
	t.Setenv("GCEFLEET_COMPUTE_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("GCEFLEET_ZONES", "us-west1-b,us-west1-c")
	c := gce.DefaultConfig()
	fs := flag.NewFlagSet("bigpi", flag.ContinueOnError)
	c.RegisterFlags(fs)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if strings.HasPrefix(f.Usage, "deprecated") {
			return
		}
		if v := gce.EnvName(f.Name); !strings.Contains(f.Usage, "env "+v) {
			t.Errorf("-%s: help %q does not name %s", f.Name, f.Usage, v)
		}
	})
	if n < 20 {
		t.Errorf("only %d flags", n)
	}
	if gce.EnvName("gce.machine-type") != "GCEFLEET_MACHINE_TYPE" || gce.EnvName("gce.compute-endpoint") != "GCEFLEET_COMPUTE_ENDPOINT" {
		t.Errorf("EnvName: %s, %s", gce.EnvName("gce.machine-type"), gce.EnvName("gce.compute-endpoint"))
	}
	if c.MachineType != "e2-small" || c.Endpoint != "http://127.0.0.1:1" || strings.Join(c.Zones, ",") != "us-west1-b,us-west1-c" {
		t.Errorf("from the environment: machine type %q, endpoint %q, zones %q", c.MachineType, c.Endpoint, c.Zones)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `GCEFLEET_SPOT="maybe"`) {
		t.Errorf("a bad variable: %v", err)
	}

	var out strings.Builder
	fs.SetOutput(&out)
	if err := fs.Parse([]string{"-gce.endpoint=http://127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	if c.Endpoint != "http://127.0.0.1:2" || !strings.Contains(out.String(), "-gce.endpoint is deprecated: use -gce.compute-endpoint") {
		t.Errorf("-gce.endpoint: endpoint %q, notice %q", c.Endpoint, out.String())
	}
}

// TestZonesHelpSaysItsDefault: -gce.zones's help names the zones it
// defaults to, and with none it names no default (not "default )").
func TestZonesHelpSaysItsDefault(t *testing.T) {
	for _, zones := range []string{"", "us-west1-b,us-west1-c"} {
		t.Setenv("GCEFLEET_ZONES", zones)
		t.Setenv("GCEFLEET_ZONE", "")
		t.Setenv("ZONE", "")
		c := gce.DefaultConfig()
		fs := flag.NewFlagSet("bigpi", flag.ContinueOnError)
		c.RegisterFlags(fs)
		usage := fs.Lookup("gce.zones").Usage
		want := "(env GCEFLEET_ZONES, GCEFLEET_ZONE or ZONE)"
		if zones != "" {
			want = "(env GCEFLEET_ZONES, GCEFLEET_ZONE or ZONE; default " + zones + ")"
		}
		if !strings.HasSuffix(usage, want) {
			t.Errorf("with GCEFLEET_ZONES=%q, -gce.zones's help is %q; want it to end %q", zones, usage, want)
		}
	}
}
