package api_test

import (
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/provider/api"
)

func TestLeaseRequestValidate(t *testing.T) {
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	hour := api.Term{Duration: time.Hour}
	for _, c := range []struct {
		name string
		r    api.LeaseRequest
		want []string // fields
	}{
		{"no deadline", api.LeaseRequest{Term: hour}, nil},
		{"deadline at the limit", api.LeaseRequest{Term: hour, Deadline: now.Add(api.MaxDeadline)}, nil},
		{"deadline beyond", api.LeaseRequest{Term: hour, Deadline: now.Add(api.MaxDeadline + time.Second)}, []string{"deadline"}},
		{"deadline past", api.LeaseRequest{Term: hour, Deadline: now}, []string{"deadline"}},
		{"no term", api.LeaseRequest{}, []string{"term"}},
		{"two terms, past deadline", api.LeaseRequest{Term: api.Term{Duration: time.Hour, Indefinite: true}, Deadline: now.Add(-time.Hour)}, []string{"deadline", "term"}},
		{"term too long", api.LeaseRequest{Term: api.Term{Duration: api.MaxDuration + time.Second}}, []string{"term"}},
	} {
		got := c.r.Validate(now)
		if len(got) != len(c.want) {
			t.Errorf("%s: %v, want problems with %v", c.name, got, c.want)
			continue
		}
		for _, f := range c.want {
			if got[f] == "" {
				t.Errorf("%s: %v, want a problem with %s", c.name, got, f)
			}
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Minute:        "600s",
		1500 * time.Millisecond: "1.5s",
		time.Nanosecond:         "0.000000001s",
		-2 * time.Second:        "-2s",
		api.MaxDuration:         "1814400s",
	} {
		if got := api.FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
