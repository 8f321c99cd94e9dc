package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// TestErrorsTeach: a mistake on the command line is answered with one
// line that says what is wrong and how to write it, and no help text.
func TestErrorsTeach(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string // the whole of stderr
	}{
		{nil, []string{"lease", "--token", "t", "--dim", "os=linux", "--duration", "2x"},
			`gcefleet: lease: --duration: "2x" is not a duration: write 90s, 15m or 2h`},
		{nil, []string{"gc", "--project", "p", "--older-than", "soon"},
			`gcefleet: gc: --older-than: "soon" is not a duration: write 90s, 15m or 2h`},
		{nil, []string{"leases", "--json=yes"},
			`gcefleet: leases: --json: "yes" is not a boolean: write --json, --json=true or --json=false`},
		{map[string]string{"GCEFLEET_DURATION": "2x"}, []string{"lease", "--token", "t", "--dim", "os=linux"},
			`gcefleet: lease: GCEFLEET_DURATION="2x": --duration: "2x" is not a duration: write 90s, 15m or 2h`},
		{nil, []string{"lease", "--token", "t", "--dim", "os=linux", "--until", "tomorrow"},
			`gcefleet: lease: --until: "tomorrow" is not a time: write it in RFC 3339, such as 2026-12-01T18:00:00Z or 2026-12-01T18:00:00+01:00`},
		{nil, []string{"leases", "--token", "t", "--provider", "nonsense"},
			`gcefleet: leases: --provider "nonsense" is not a URL: write http://HOST:PORT, such as http://127.0.0.1:8790`},
		{nil, []string{"machines", "--token", "t", "--provider", "127.0.0.1:8790"},
			`gcefleet: machines: --provider "127.0.0.1:8790" is not a URL: write http://HOST:PORT, such as http://127.0.0.1:8790`},
		{nil, []string{"leases", "--token", "t", "extra", "--active"},
			`gcefleet: leases takes no arguments, but was given ["extra" "--active"]; flags are written --name value, and go before any argument`},
		{nil, []string{"gc", "--project", "p", "extra"},
			`gcefleet: gc takes no arguments, but was given ["extra"]; flags are written --name value, and go before any argument`},
		{nil, []string{"gc", "--project", "My Project"},
			`gcefleet: gc: --project "My Project" is not a project id: 6-30 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen (gcloud projects list shows them in its PROJECT_ID column)`},
		{nil, []string{"gc", "--project", "my-project", "--compute-endpoint", "http://127.0.0.1:8780/compute/v1/"},
			`gcefleet: gc: --compute-endpoint: compute endpoint "http://127.0.0.1:8780/compute/v1/" is the discovery clients' URL: write its base, http://127.0.0.1:8780 (the clients add /compute/v1/ themselves)`},
		// Without --dim, lease says so before it asks for a token.
		{nil, []string{"lease", "--duration", "1h"},
			`gcefleet: lease: give at least one --dim, such as --dim os=linux`},
	} {
		code, out, stderr := runCLI(t, tc.env, tc.args...)
		if code != 2 || stderr != tc.want+"\n" || out != "" {
			t.Errorf("gcefleet %q: exit %d\nstdout %q\nstderr %q\nwant exit 2, no stdout and stderr %q", tc.args, code, out, stderr, tc.want)
		}
	}
}

// TestLeaseCommandsReadWell: API errors carry no layer names, the leases
// table gives times to the second with their zone and no :0 port, and
// watch prints an extension.
func TestLeaseCommandsReadWell(t *testing.T) {
	url := serveInProcess(t, writeConfig(t, filepath.Join(t.TempDir(), "p.db")))
	ctx := context.Background()
	gce := &client.Client{BaseURL: url, Token: gceToken}
	if _, err := gce.AddMachine(ctx, store.Machine{Hostname: "vm-np", Dimensions: store.Dimensions{"os": {"linux"}}, Connection: store.Connection{Address: "10.0.0.9"}}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"GCEFLEET_PROVIDER": url, "GCEFLEET_TOKEN": aliceToken}

	code, _, stderr := runCLI(t, env, "release", "0123456789abcdef01234567")
	if code != 1 || stderr != "gcefleet: releasing: lease 0123456789abcdef01234567: not found\n" {
		t.Errorf("release of an unknown lease: exit %d, stderr %q", code, stderr)
	}

	code, out, stderr := runCLI(t, env, "lease", "--dim", "os=linux", "--duration", "1h", "--json")
	var l store.Lease
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil {
		t.Fatalf("lease: exit %d, %s%s", code, out, stderr)
	}
	code, out, _ = runCLI(t, env, "leases")
	row := regexp.MustCompile(`(?m)^` + l.ID + `  FULFILLED  vm-np    10\.0\.0\.9  (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z+\-0-9]+)  os=linux$`)
	m := row.FindStringSubmatch(out)
	if code != 0 || m == nil || strings.Contains(out, ":0 ") {
		t.Errorf("leases table, want the address without :0 and the expiry with seconds and zone:\n%s", out)
	} else if got, want := m[1], l.ExpiresAt.Local().Format("2006-01-02 15:04:05 MST"); got != want {
		t.Errorf("leases prints expiry %q, want %q", got, want)
	}

	// watch prints the lease, then its extension, then its end.
	pr, pw := io.Pipe()
	errb := &testutil.SyncBuffer{}
	watched := make(chan int, 1)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		defer pw.Close()
		e := &environ{stdout: pw, stderr: errb, getenv: func(k string) string { return env[k] }, progress: 50 * time.Millisecond}
		watched <- run(wctx, e, []string{"watch", l.ID})
	}()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("watch ended before %s", what)
			}
			return line
		case <-time.After(10 * time.Second):
			t.Fatalf("watch printed no line for %s within 10s", what)
		}
		return ""
	}
	if got := next("the first line"); !strings.HasPrefix(got, l.ID+"  FULFILLED  machine vm-np at 10.0.0.9, expires ") {
		t.Errorf("watch's first line: %q", got)
	}
	ext, err := (&client.Client{BaseURL: url, Token: aliceToken}).Extend(ctx, l.ID, store.Term{Duration: 3 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := next("the extension"), l.ID+"  FULFILLED  extended: machine vm-np at 10.0.0.9, expires "+ext.ExpiresAt.Local().Format("2006-01-02 15:04:05 MST"); got != want {
		t.Errorf("watch after an extension: %q, want %q", got, want)
	}
	if code, _, stderr := runCLI(t, env, "release", l.ID); code != 0 {
		t.Fatalf("release: exit %d, %s", code, stderr)
	}
	if got := next("the end"); !strings.HasPrefix(got, l.ID+"  RELEASED   ended ") {
		t.Errorf("watch at the end: %q", got)
	}
	select {
	case code := <-watched:
		if code != 0 {
			t.Errorf("watch exited %d, %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not exit within 10s of the lease's end")
	}
}

// TestLeaseWaitSaysHowLongItWaited: lease --wait says, while it waits, how
// long it has waited and when the request gives up, until a machine comes.
func TestLeaseWaitSaysHowLongItWaited(t *testing.T) {
	url := serveInProcess(t, writeConfig(t, filepath.Join(t.TempDir(), "p.db")))
	ctx := context.Background()
	gce := &client.Client{BaseURL: url, Token: gceToken}
	env := map[string]string{"GCEFLEET_PROVIDER": url, "GCEFLEET_TOKEN": aliceToken}
	pr, pw := io.Pipe()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // the test has what it needs; keep the command unblocked
			}
		}
	}()
	var lout bytes.Buffer
	leased := make(chan int, 1)
	go func() {
		defer pw.Close()
		e := &environ{stdout: &lout, stderr: pw, getenv: func(k string) string { return env[k] }, progress: 50 * time.Millisecond}
		leased <- run(ctx, e, []string{"lease", "--dim", "cpus=64", "--indefinite", "--wait"})
	}()
	said := regexp.MustCompile(`^lease [0-9a-f]+: still waiting for a machine with cpus=64 \(\d+s so far, number 1 of 1 in the queue for these dimensions; the request gives up at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z+\-0-9]+\)$`)
	var seen []string
	timeout := time.After(10 * time.Second)
	for len(seen) == 0 || !said.MatchString(seen[len(seen)-1]) {
		select {
		case line := <-lines:
			seen = append(seen, line)
		case <-timeout:
			t.Fatalf("lease --wait said no progress within 10s: %q", seen)
		}
	}
	if !strings.HasSuffix(seen[0], "is queued (number 1 of 1 in the queue for these dimensions); waiting for a machine...") {
		t.Errorf("lease --wait's first line: %q", seen[0])
	}
	if _, err := gce.AddMachine(ctx, store.Machine{Hostname: "vm-big", Dimensions: store.Dimensions{"cpus": {"64"}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-leased:
		if code != 0 || !strings.Contains(lout.String(), "FULFILLED  vm-big") {
			t.Errorf("lease --wait: exit %d\n%s", code, lout.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("lease --wait did not end within 10s of a machine coming")
	}
}
