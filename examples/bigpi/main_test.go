package main

import (
	"math"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/internal/testutil"
)

// TestBigpi runs the example as a user would and checks what it prints.
func TestBigpi(t *testing.T) {
	bin := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/examples/bigpi")
	cmd := exec.Command(bin, "-nmach=3", "-samples=2e7")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bigpi: %v\n%s", err, stderr.String())
	}
	m := regexp.MustCompile(`π ≈ ([0-9.]+)  error [-+0-9.e]+  \(20000000 samples on 3 local machines in .*samples/s\)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("output %q", out)
	}
	pi, _ := strconv.ParseFloat(m[1], 64)
	// With 2e7 samples the standard error is about 4e-4; allow 10 of them.
	if math.Abs(pi-math.Pi) > 4e-3 {
		t.Errorf("estimate %v is too far from π", pi)
	}
	for _, want := range []string{"starting 3 local machines", "3 machines running", "sampled 100.0%"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

func TestBigpiBadFlags(t *testing.T) {
	bin := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/examples/bigpi")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"-samples=lots"}, 2, `-samples "lots" is not a whole number`},
		{[]string{"-nmach=0"}, 2, "need at least one machine"},
		{[]string{"-system=cloud"}, 2, `unknown -system "cloud"`},
		{[]string{"-system=gce", "-gce.project="}, 1, "no project: set -gce.project"},
	} {
		cmd := exec.Command(bin, tc.args...)
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != tc.code || !strings.Contains(string(out), tc.msg) {
			t.Errorf("bigpi %v: exit %d, %q; want exit %d and %q", tc.args, cmd.ProcessState.ExitCode(), out, tc.code, tc.msg)
		}
	}
}
