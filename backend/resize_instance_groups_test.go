package backend_test

import (
	"testing"

	"github.com/gcefleet/gcefleet/backend"
)

func TestTarget(t *testing.T) {
	for _, c := range []struct {
		name                       string
		size, leased, others, want int
	}{
		{"empty group grows to the minimum", 0, 0, 0, 2},
		{"idle group stays", 2, 0, 0, 2},
		{"a tenth above what is leased", 10, 10, 0, 11},
		{"rounded up", 3, 3, 0, 4},
		{"never above the maximum", 50, 50, 0, 50},
		{"older revisions in the zone hold room back", 10, 10, 45, 10},
		{"room freed as they drain", 10, 10, 30, 11},
		{"never shrinks (that would delete instances GCE picks)", 20, 0, 0, 20},
		{"never shrinks below what older revisions leave", 10, 0, 48, 10},
	} {
		n := backend.Need{Size: c.size, Leased: c.leased, Others: c.others, Minimum: 2, Maximum: 50}
		if got := backend.Target(n); got != c.want {
			t.Errorf("%s: Target(size %d, leased %d, others %d) = %d, want %d", c.name, c.size, c.leased, c.others, got, c.want)
		}
	}
	if got := backend.Target(backend.Need{Minimum: 500, Maximum: 1000}); got != 100 {
		t.Errorf("a group of minimum 500 from empty: %d, want 100 (growth by at most 100 a pass)", got)
	}
}

// TestKeep: what a group needs, and so what it grows to and what of its
// idle machines idle_timeout may delete: the minimum, or a tenth above
// what is leased plus the waiting requests plus min_idle.
func TestKeep(t *testing.T) {
	for _, c := range []struct {
		name                                    string
		leased, pending, minIdle, minimum, want int
	}{
		{"the minimum", 0, 0, 0, 2, 2},
		{"min_idle above the minimum", 0, 0, 3, 2, 3},
		{"min_idle beyond what is leased", 10, 0, 3, 2, 14},
		{"and beyond what waits", 10, 5, 3, 2, 19},
		{"a window's minimum above it all", 10, 0, 3, 20, 20},
	} {
		n := backend.Need{Leased: c.leased, Pending: c.pending, MinIdle: c.minIdle, Minimum: c.minimum, Maximum: 50}
		if got := backend.Keep(n); got != c.want {
			t.Errorf("%s: Keep(%+v) = %d, want %d", c.name, n, got, c.want)
		}
	}
	// A lease that takes one of two idle machines of min_idle 2 grows
	// the group by two at once: one for the tenth over, one for the spare.
	if got := backend.Target(backend.Need{Size: 2, Leased: 1, MinIdle: 2, Minimum: 1, Maximum: 10}); got != 4 {
		t.Errorf("Target after a lease with min_idle 2: %d, want 4", got)
	}
	if got := backend.Target(backend.Need{Size: 9, Leased: 9, MinIdle: 2, Minimum: 1, Maximum: 10}); got != 10 {
		t.Errorf("min_idle at the maximum: %d, want 10", got)
	}
}
