package store

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// Errors the store returns; callers classify them with errors.Is.
var (
	ErrNotFound       = errors.New("not found")
	ErrConflict       = errors.New("conflict")
	ErrRequestIDReuse = errors.New("request id reused with another request")
	ErrLeased         = errors.New("machine is leased")
	ErrNotActive      = errors.New("lease is not active")
	// ErrReclaimed refuses to catalog again a machine whose lease was
	// reclaimed: its backend deletes it and makes a fresh one. It holds
	// while the reclamation's event is kept (see PruneEvents).
	ErrReclaimed = errors.New("machine was reclaimed")
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

// normalize sorts values and drops duplicates, so that equal dimensions
// encode equally.
func (d Dimensions) normalize() Dimensions {
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
	Added   time.Time `json:"added"`
}

// Lease states.
const (
	Pending   = "PENDING"
	Fulfilled = "FULFILLED"
	Released  = "RELEASED"
	Expired   = "EXPIRED"
	Denied    = "DENIED" // the request's deadline passed with no machine
)

// MaxDuration is the longest lease that is not indefinite.
const MaxDuration = 21 * 24 * time.Hour

// Term is how long a lease lasts once fulfilled: exactly one of a
// duration, an absolute expiry, or indefinite.
type Term struct {
	Duration   time.Duration `json:"duration,omitempty"`
	ExpiresAt  time.Time     `json:"expires_at,omitzero"`
	Indefinite bool          `json:"indefinite,omitempty"`
}

// Validate returns what is wrong with the term, if anything.
func (t Term) Validate(now time.Time) error {
	n := 0
	if t.Duration != 0 {
		n++
		if t.Duration < time.Second || t.Duration > MaxDuration {
			return fmt.Errorf("duration %v: must be between 1s and 21 days (or ask for indefinite)", t.Duration)
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
	// means a day.
	Deadline time.Time `json:"deadline,omitzero"`
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
