package provider_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDurationsAsPeopleWriteThem(t *testing.T) {
	w := start(t)
	const alice = "alice-secret-0123456789"
	var minutes string
	for _, c := range []struct{ id, duration, want string }{
		{"minutes", `"10m"`, `"600s"`},
		{"seconds", `"600s"`, `"600s"`},
		{"fraction", `"1.5s"`, `"1.5s"`},
		{"mixed", `"1h30m"`, `"5400s"`},
		{"nanoseconds", `3600000000000`, `"3600s"`},
	} {
		status, body := postAs(t, w, alice, "/v1/leases", `{"request_id":"`+c.id+`","dimensions":{"os":["linux"]},"term":{"duration":`+c.duration+`}}`)
		if status != 200 {
			t.Errorf("duration %s: answered %d %s", c.duration, status, body)
			continue
		}
		var l struct {
			ID      string `json:"id"`
			Request struct {
				Term map[string]json.RawMessage `json:"term"`
			} `json:"request"`
		}
		if err := json.Unmarshal([]byte(body), &l); err != nil {
			t.Fatal(err)
		}
		if c.id == "minutes" {
			minutes = l.ID
		}
		if got := string(l.Request.Term["duration"]); got != c.want {
			t.Errorf("duration %s: the answer's term.duration is %s, want %s (%s)", c.duration, got, c.want, body)
		}
	}
	// The Go client reads the string back.
	l, err := w.alice.Lease(t.Context(), minutes, 0)
	if err != nil {
		t.Fatal(err)
	}
	if l.Request.Term.Duration != 10*time.Minute {
		t.Errorf("client read term %v, want 10m", l.Request.Term.Duration)
	}

	for _, bad := range []string{`"2x"`, `"ten minutes"`, `1.5`, `true`, `"-"`} {
		status, body := postAs(t, w, alice, "/v1/leases", `{"request_id":"bad","dimensions":{"os":["linux"]},"term":{"duration":`+bad+`}}`)
		if status != 400 || !strings.Contains(body, `"term.duration"`) || !strings.Contains(body, "is not a duration: write a string such as") || !strings.Contains(body, "10m") {
			t.Errorf("duration %s: answered %d %s, want a 400 on term.duration that says how to write one", bad, status, body)
		}
	}
	status, body := postAs(t, w, alice, "/v1/leases", `{"request_id":"long","dimensions":{"os":["linux"]},"term":{"duration":"600h"}}`)
	if status != 400 || !strings.Contains(body, "2160000s") || strings.Contains(body, "2160000000000000") {
		t.Errorf("a term too long: answered %d %s, want the duration in seconds", status, body)
	}
	// Given, a zero is out of range (not "give one of"); a small number
	// was most likely meant as seconds.
	for _, c := range []struct{ duration, want string }{
		{`"0s"`, "must be between 1s and 21 days"},
		{`600`, "a number is read as nanoseconds"},
	} {
		status, body := postAs(t, w, alice, "/v1/leases", `{"request_id":"odd","dimensions":{"os":["linux"]},"term":{"duration":`+c.duration+`}}`)
		if status != 400 || !strings.Contains(body, `"term.duration"`) || !strings.Contains(body, c.want) {
			t.Errorf("duration %s: answered %d %s, want a 400 on term.duration saying %q", c.duration, status, body, c.want)
		}
	}
}
