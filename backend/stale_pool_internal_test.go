package backend

import (
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/store"
)

// TestStalePool: a warm pool machine is deleted before its fleet
// certificate (valid FleetCertValidity from before it was cataloged)
// expires, whatever its group needs; leased machines, young ones,
// machines pending deletion, and those of other groups stay.
func TestStalePool(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	if poolMaxAge <= 0 || poolMaxAge > FleetCertValidity*2/3 {
		t.Fatalf("poolMaxAge %v: a warm machine would serve a certificate near or past its expiry (valid %v)", poolMaxAge, FleetCertValidity)
	}
	ms := []store.Machine{
		{Hostname: "old", State: store.Available, Added: now.Add(-poolMaxAge)},
		{Hostname: "young", State: store.Available, Added: now.Add(-poolMaxAge + time.Minute)},
		{Hostname: "old-leased", State: store.Leased, Added: now.Add(-FleetCertValidity)},
		{Hostname: "old-pending", State: store.Available, Added: now.Add(-FleetCertValidity)},
		{Hostname: "old-taken", State: store.Available, Added: now.Add(-FleetCertValidity)},
	}
	pending := map[string]time.Time{"old-pending": now}
	g := group{t: Template{GceBoot: true}}
	got := g.stalePool(ms, pending, []store.Machine{{Hostname: "old-taken"}}, now)
	if len(got) != 1 || got[0].Hostname != "old" {
		t.Errorf("stalePool = %v, want only old", got)
	}
	if got := (group{}).stalePool(ms, nil, nil, now); len(got) != 0 {
		t.Errorf("a group that is not gceboot's: stalePool = %v, want none", got)
	}
}
