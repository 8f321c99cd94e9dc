// Package api holds the Machine Provider's HTTP API as Go types: the
// resources (machines, leases, events) as they travel in JSON, the rules a
// lease request must follow, and the table of error codes. The server, its
// Go client and the store share them; it links no database driver, so a
// program that only calls the API does not either.
package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Dimensions describe a machine (key -> values) or what a lease asks for
// (every value of every key must be among the machine's values for it).
type Dimensions map[string][]string

// Matches reports whether a machine with dimensions m satisfies want.
func (want Dimensions) Matches(m Dimensions) bool {
	for k, vs := range want {
		for _, v := range vs {
			found := false
			for _, mv := range m[k] {
				if mv == v {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
	}
	return true
}

// Normalize returns d with its values sorted and without duplicates, so
// that equal dimensions encode equally.
func (d Dimensions) Normalize() Dimensions {
	out := Dimensions{}
	for k, vs := range d {
		seen := map[string]bool{}
		var u []string
		for _, v := range vs {
			if !seen[v] {
				seen[v] = true
				u = append(u, v)
			}
		}
		sort.Strings(u)
		out[k] = u
	}
	return out
}

// Policies say what happens to a machine when its lease ends.
type Policies struct {
	// OnReclaim is what the backend does with a reclaimed machine:
	// DELETE (the default) or RECYCLE.
	OnReclaim string `json:"on_reclaim,omitempty"`
}

// Connection is what a lessee needs to reach its machine.
type Connection struct {
	Address string `json:"address,omitempty"`
	Port    int    `json:"port,omitempty"`
	CACert  string `json:"ca_cert,omitempty"`
}

// Machine states.
const (
	Available = "AVAILABLE"
	Leased    = "LEASED"
)

// Machine is a catalog entry.
type Machine struct {
	Hostname   string     `json:"hostname"`
	Backend    string     `json:"backend"`
	Dimensions Dimensions `json:"dimensions"`
	Policies   Policies   `json:"policies"`
	Connection Connection `json:"connection"`
	// State and LeaseID are the provider's, not the backend's.
	State   string    `json:"state,omitempty"`
	LeaseID string    `json:"lease_id,omitempty"`
	Added   time.Time `json:"added,omitzero"`
}

// Lease states.
const (
	Pending   = "PENDING"
	Fulfilled = "FULFILLED"
	Released  = "RELEASED"
	Expired   = "EXPIRED"
	Denied    = "DENIED" // the request's deadline passed with no machine
	// Reclaimed: the machine went away behind its backend's back (deleted
	// by someone else, or preempted) and its backend reported it gone.
	Reclaimed = "RECLAIMED"
)

// Limits of a lease request.
const (
	// MaxDuration is the longest lease that is not indefinite.
	MaxDuration = 21 * 24 * time.Hour
	// DefaultDeadline is how long a request without a deadline waits for
	// a machine.
	DefaultDeadline = 24 * time.Hour
	// MaxDeadline is how far away a request's deadline may be.
	MaxDeadline = 7 * 24 * time.Hour
)

// Term is how long a lease lasts once fulfilled: exactly one of a
// duration, an absolute expiry, or indefinite.
type Term struct {
	Duration   time.Duration `json:"duration,omitempty"`
	ExpiresAt  time.Time     `json:"expires_at,omitzero"`
	Indefinite bool          `json:"indefinite,omitempty"`
}

// wireTerm is Term as JSON carries it: the duration as Google's JSON
// mapping of google.protobuf.Duration writes it ("600s", "1.5s").
type wireTerm struct {
	Duration   json.RawMessage `json:"duration,omitempty"`
	ExpiresAt  time.Time       `json:"expires_at,omitzero"`
	Indefinite bool            `json:"indefinite,omitempty"`
}

// MarshalJSON writes the duration as a string of decimal seconds, as
// Google's APIs do, so that no JSON shows nanoseconds.
func (t Term) MarshalJSON() ([]byte, error) {
	w := wireTerm{ExpiresAt: t.ExpiresAt, Indefinite: t.Indefinite}
	if t.Duration != 0 {
		w.Duration = strconv.AppendQuote(nil, FormatDuration(t.Duration))
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads the duration as a string people write ("10m",
// "600s", "1.5s", "1h30m") or, from older clients, as an integer of
// nanoseconds.
func (t *Term) UnmarshalJSON(b []byte) error {
	var w wireTerm
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	d, err := parseWireDuration(w.Duration)
	if err != nil {
		return err
	}
	*t = Term{Duration: d, ExpiresAt: w.ExpiresAt, Indefinite: w.Indefinite}
	return nil
}

// DurationError is a duration in a request that cannot be read.
type DurationError struct {
	Value string // the JSON value as sent
	// Why is what is wrong with a value that reads as a duration; empty
	// when it does not read as one.
	Why string
}

func (e *DurationError) Error() string {
	if e.Why != "" {
		return e.Value + ": " + e.Why
	}
	return fmt.Sprintf("%s is not a duration: write a string such as \"600s\", \"10m\", \"1.5h\" or \"1h30m\"", e.Value)
}

// outOfRange is why a duration given is not a lease's.
const outOfRange = "must be between 1s and 21 days, 504h (or ask for indefinite)"

func parseWireDuration(raw json.RawMessage) (time.Duration, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	bad := &DurationError{Value: string(raw)}
	if len(raw) > 64 {
		bad.Value = string(raw[:64]) + "…"
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, bad
		}
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return 0, bad
		}
		if d <= 0 { // given, so not to be read as absent
			bad.Why = outOfRange
			return 0, bad
		}
		return d, nil
	}
	// Nanoseconds, as clients before durations were strings sent them.
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, bad
	}
	if n < int64(time.Second) {
		// 600 meant as seconds is 600 ns: say how a number is read.
		bad.Why = "a number is read as nanoseconds, and a lease lasts at least 1s: write a string such as \"600s\" or \"10m\""
		return 0, bad
	}
	return time.Duration(n), nil
}

// FormatDuration writes d as Google's JSON mapping of
// google.protobuf.Duration does: decimal seconds with an "s", with
// no more fractional digits than needed ("600s", "1.5s").
func FormatDuration(d time.Duration) string {
	neg := d < 0
	u := uint64(d)
	if neg {
		u = -u
	}
	sec, frac := u/uint64(time.Second), u%uint64(time.Second)
	s := strconv.FormatUint(sec, 10)
	if frac != 0 {
		f := strings.TrimRight(fmt.Sprintf("%09d", frac), "0")
		s += "." + f
	}
	if neg {
		s = "-" + s
	}
	return s + "s"
}

// Validate returns what is wrong with the term, if anything.
func (t Term) Validate(now time.Time) error {
	n := 0
	if t.Duration != 0 {
		n++
		if t.Duration < time.Second || t.Duration > MaxDuration {
			return fmt.Errorf("duration %s: %s", FormatDuration(t.Duration), outOfRange)
		}
	}
	if !t.ExpiresAt.IsZero() {
		n++
		if !t.ExpiresAt.After(now) || t.ExpiresAt.Sub(now) > MaxDuration {
			return fmt.Errorf("expires_at %s: must be in the future and at most 21 days away", t.ExpiresAt.Format(time.RFC3339))
		}
	}
	if t.Indefinite {
		n++
	}
	if n != 1 {
		return errors.New("give exactly one of duration, expires_at and indefinite")
	}
	return nil
}

// LeaseRequest asks for a machine.
type LeaseRequest struct {
	// RequestID makes the request idempotent per client.
	RequestID  string     `json:"request_id"`
	Dimensions Dimensions `json:"dimensions"`
	Term       Term       `json:"term"`
	// Deadline is how long the request may wait for a machine; zero
	// means DefaultDeadline from when it is made.
	Deadline time.Time `json:"deadline,omitzero"`
}

// Validate returns what is wrong with the request's term and deadline,
// by field name ("term", "deadline"), or nil. The server checks the
// request id and dimensions, whose limits are its configuration's.
func (r LeaseRequest) Validate(now time.Time) map[string]string {
	var fields map[string]string
	add := func(k, v string) {
		if fields == nil {
			fields = map[string]string{}
		}
		fields[k] = v
	}
	if err := r.Term.Validate(now); err != nil {
		add("term", err.Error())
	}
	if !r.Deadline.IsZero() && (!r.Deadline.After(now) || r.Deadline.Sub(now) > MaxDeadline) {
		add("deadline", "in the future and at most 7 days away")
	}
	return fields
}

// Lease is a request and what became of it.
type Lease struct {
	ID        string       `json:"id"`
	Client    string       `json:"client"`
	Request   LeaseRequest `json:"request"`
	State     string       `json:"state"`
	Hostname  string       `json:"hostname,omitempty"`
	Machine   *Machine     `json:"machine,omitempty"` // once fulfilled
	Created   time.Time    `json:"created"`
	Fulfilled time.Time    `json:"fulfilled,omitzero"`
	// ExpiresAt is when a fulfilled lease ends; zero for indefinite.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Ended     time.Time `json:"ended,omitzero"`
	// Claim is the provider's signed word that this lease holds its
	// machine until ExpiresAt (a token of package claim), which the
	// machine's gceboot checks before it serves the lessee. It is set on
	// a fulfilled lease of a gceboot (pool) machine with an expiry, and
	// shown only to the lease's own client and to admins; after an
	// extension it names the new expiry.
	Claim string `json:"claim,omitempty"`
}

// Event is an entry of the feed that backends read from a cursor.
type Event struct {
	ID       int64     `json:"id"`
	Backend  string    `json:"backend"`
	Kind     string    `json:"kind"` // "leased" or "reclaimed"
	Hostname string    `json:"hostname"`
	LeaseID  string    `json:"lease_id"`
	At       time.Time `json:"at"`
	// OnReclaim repeats the machine's policy for a reclaimed machine.
	OnReclaim string `json:"on_reclaim,omitempty"`
}

// ClaimKey is the public half of the provider's claim key, which signs
// the claims of pool machines' leases (see package claim).
type ClaimKey struct {
	Algorithm string `json:"algorithm"` // "ed25519"
	// PublicKey is the key, base64 (standard, unpadded).
	PublicKey string `json:"public_key"`
}
