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
