package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &environ{stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
	code := run(context.Background(), e, args)
	return code, out.String(), errb.String()
}

func TestHelpListsEveryCommand(t *testing.T) {
	code, out, _ := runCLI(t, nil, "--help")
	if code != 0 {
		t.Fatalf("--help exited %d", code)
	}
	for _, c := range commands() {
		if !strings.Contains(out, "  "+c.name+" ") {
			t.Errorf("help lacks command %s:\n%s", c.name, out)
		}
	}
}

func TestCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		code     int
		contains string
	}{
		{nil, 2, "no command given"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"serve"}, 2, "serve: --config is required"},
		{[]string{"plan"}, 2, "plan: --config is required"},
		{[]string{"lease", "--dim", "os=linux", "--duration", "1h"}, 2, "lease: no token: set GCEFLEET_TOKEN, --token-file or --token"},
		{[]string{"leases", "--token-file", "/does/not/exist"}, 2, "leases: --token-file: open /does/not/exist: no such file"},
		{[]string{"leases", "--token", "t", "--token-file", "/dev/null"}, 2, "give one"},
		{[]string{"leases", "--token-file", "/dev/null"}, 2, "want one token on one line"},
		{[]string{"lease", "--token", "t", "--duration", "1h"}, 2, "give at least one --dim"},
		{[]string{"lease", "--token", "t", "--dim", "os"}, 2, "want KEY=VALUE"},
		{[]string{"lease", "--token", "t", "--dim", "os=linux", "--duration", "1000h"}, 2, "between 1s and 21 days"},
		{[]string{"release", "--token", "t"}, 2, "name the lease to release"},
		{[]string{"doctor"}, 2, "doctor: --project is required"},
		{[]string{"gc", "--project", "p", "extra"}, 2, `gc takes no arguments, but was given ["extra"]`},
		{[]string{"gc", "--older-than", "soon"}, 2, `gc: --older-than: "soon" is not a duration: write 90s, 15m or 2h`},
		{[]string{"gc", "--project", "p-gc-test", "--older-than", "-1h"}, 2, `gc: --older-than -1h0m0s is negative`},
		{[]string{"emulator", "--no-such-flag"}, 2, "flag provided but not defined: --no-such-flag"},
		{[]string{"emulator", "--image", "gcr.io/x/app"}, 2, "want IMAGE=PATH"},
		{[]string{"emulator", "--image", "gcr.io/x/app=/does/not/exist"}, 2, "no such file"},
		{[]string{"emulator", "--listen", "256.0.0.1:1"}, 1, "cannot listen on 256.0.0.1:1"},
	} {
		code, _, stderr := runCLI(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.contains) {
			t.Errorf("gcefleet %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, tc.code, tc.contains)
		}
	}
}

func TestCommandHelpHasExample(t *testing.T) {
	for _, c := range commands() {
		code, out, _ := runCLI(t, nil, c.name, "--help")
		if code != 0 || !strings.Contains(out, "Example:") || !strings.Contains(out, "gcefleet "+c.name) || strings.Count(out, "Usage:") != 1 {
			t.Errorf("%s --help: exit %d, want the help once; output:\n%s", c.name, code, out)
		}
	}
}

func TestEnvironmentSetsFlags(t *testing.T) {
	// A bad value from the environment is reported with the variable's name.
	code, _, stderr := runCLI(t, map[string]string{"GCEFLEET_EMULATOR_WAIT_TIMEOUT": "soon"}, "emulator")
	if code != 2 || !strings.Contains(stderr, `GCEFLEET_EMULATOR_WAIT_TIMEOUT="soon"`) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	// The old name still works, with a notice.
	code, _, stderr = runCLI(t, map[string]string{"GCEFLEET_WAIT_TIMEOUT": "soon"}, "emulator")
	if code != 2 || !strings.Contains(stderr, "GCEFLEET_WAIT_TIMEOUT is deprecated: set GCEFLEET_EMULATOR_WAIT_TIMEOUT instead") || !strings.Contains(stderr, `GCEFLEET_WAIT_TIMEOUT="soon"`) {
		t.Errorf("old name: exit %d, stderr %q", code, stderr)
	}
	// GCEFLEET_IMAGE, bigpi's gceboot image, does not reach the emulator's image map.
	code, _, stderr = runCLI(t, map[string]string{"GCEFLEET_IMAGE": "gcr.io/p/gceboot:v1", "GCEFLEET_EMULATOR_WAIT_TIMEOUT": "soon"}, "emulator")
	if code != 2 || strings.Contains(stderr, "IMAGE=PATH") {
		t.Errorf("GCEFLEET_IMAGE read by the emulator: exit %d, stderr %q", code, stderr)
	}
}

func TestEmulatorServesAndStops(t *testing.T) {
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		e := &environ{stdout: pw, stderr: io.Discard, getenv: func(k string) string {
			if k == "GCEFLEET_EMULATOR_LISTEN" {
				return "127.0.0.1:0"
			}
			return ""
		}}
		done <- run(ctx, e, []string{"emulator"})
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	endpoint := strings.TrimSpace(line)
	if !strings.HasPrefix(endpoint, "http://127.0.0.1:") {
		t.Fatalf("first line %q is not the endpoint", line)
	}
	resp, err := http.Get(endpoint + "/compute/v1/projects/p/zones/us-central1-a")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("zones.get: %s", resp.Status)
	}
	go io.Copy(io.Discard, pr)
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after interrupt", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("emulator did not stop on interrupt")
	}
}

// TestEveryFlagHasItsVariable checks that every flag of every command has
// one environment variable of its own, that sets it, and that the help
// names it.
func TestEveryFlagHasItsVariable(t *testing.T) {
	owner := map[string]string{} // variable -> command and flag, across commands
	for _, c := range commands() {
		code, help, _ := runCLI(t, nil, c.name, "--help")
		if code != 0 {
			t.Errorf("%s --help: exit %d", c.name, code)
		}
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		c.flags(fs)
		fs.VisitAll(func(f *flag.Flag) {
			v := c.envName(f.Name)
			if !strings.HasPrefix(v, "GCEFLEET_") {
				t.Errorf("%s --%s: variable %q", c.name, f.Name, v)
			}
			if !strings.Contains(help, "--"+f.Name+" ") && !strings.Contains(help, "--"+f.Name+"\t") || !strings.Contains(help, "["+v+"]") {
				t.Errorf("%s --help does not name %s for --%s:\n%s", c.name, v, f.Name, help)
			}
			// A variable means one thing: the same flag name in two commands
			// may share it only if the flag means the same there.
			if o, ok := owner[v]; ok && !strings.HasSuffix(o, " --"+f.Name) {
				t.Errorf("%s is both %s and %s --%s", v, o, c.name, f.Name)
			}
			owner[v] = c.name + " --" + f.Name
		})
	}
	if o := owner["GCEFLEET_IMAGE"]; o != "" {
		t.Errorf("GCEFLEET_IMAGE is bigpi's gceboot image, but sets %s", o)
	}
}
