package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/store"
)

// TestCLIEscapesWhatTheServerSends: hostnames, addresses, dimensions and
// messages with terminal escapes, line breaks and bidi overrides, as a
// database written before the provider checked them holds, are printed
// escaped by gcefleet leases, machines and watch.
func TestCLIEscapesWhatTheServerSends(t *testing.T) {
	db := filepath.Join(t.TempDir(), "p.db")
	ctx := context.Background()
	st, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	const evil = "vm\x1b[2J\x1b]0;pwned\a\r\nFAKE\u202e\xff"
	if _, err := st.AddMachine(ctx, store.Machine{Hostname: evil, Backend: "gce",
		Dimensions: store.Dimensions{"os": {"linux\x1b[31m"}}, Connection: store.Connection{Address: "10.0.0.1\x1b[8m", Port: 22}}); err != nil {
		t.Fatal(err)
	}
	l, _, err := st.RequestLease(ctx, "alice", store.LeaseRequest{RequestID: "r1", Dimensions: store.Dimensions{"os": {"linux\x1b[31m"}}, Term: store.Term{Duration: time.Hour}})
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	st.Close()

	url := serveInProcess(t, writeConfig(t, db))
	alice := map[string]string{"GCEFLEET_PROVIDER": url, "GCEFLEET_TOKEN": aliceToken}
	admin := map[string]string{"GCEFLEET_PROVIDER": url, "GCEFLEET_TOKEN": adminToken}
	for _, c := range []struct {
		env  map[string]string
		args []string
	}{
		{alice, []string{"leases"}},
		{admin, []string{"machines"}},
	} {
		code, out, stderr := runCLI(t, c.env, c.args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, stderr)
		}
		for _, bad := range []string{"\x1b", "\a", "\r", "\u202e", "\xff", "\nFAKE"} {
			if strings.Contains(out, bad) {
				t.Errorf("%v prints %q raw:\n%q", c.args, bad, out)
			}
		}
		if !strings.Contains(out, `vm\x1b[2J\x1b]0;pwned\x07\x0d\x0aFAKE\u202e`) {
			t.Errorf("%v does not show the hostname escaped:\n%s", c.args, out)
		}
	}
	// watch prints each change with printChange.
	var b strings.Builder
	l.Machine = &store.Machine{Connection: store.Connection{Address: "10.0.0.1\x1b[8m", Port: 22}}
	if err := printChange(&b, l, false, false); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); strings.Contains(out, "\x1b") || !strings.Contains(out, `machine vm\x1b[2J`) || !strings.Contains(out, `at 10.0.0.1\x1b[8m:22`) {
		t.Errorf("watch's line: %q", out)
	}
}

func TestCleanKeepsPlainText(t *testing.T) {
	for in, want := range map[string]string{
		"vm-1.example.com": "vm-1.example.com",
		"zoë 🙂":            "zoë 🙂",
		"a\tb":             `a\x09b`,
		"\x00\x7f":         `\x00\x7f`,
		"\U000e0041":       `\U000e0041`,
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
	if got := cleanLines("one\ntwo\x1b[0m"); got != "one\ntwo\\x1b[0m" {
		t.Errorf("cleanLines: %q", got)
	}
}
