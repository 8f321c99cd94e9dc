package backend

import (
	"context"
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

// TestRetireCertificateRenewed: the backend's client certificate is
// short-lived, and renewed once two thirds of it passed: a backend runs
// longer than a fleet certificate is valid.
func TestRetireCertificateRenewed(t *testing.T) {
	ca, err := LoadFleetCA(context.Background(), nil, "d-test")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rc := &renewingCert{ca: ca, name: "gcefleet-backend", now: func() time.Time { return now }}
	first, err := rc.get(nil)
	if err != nil {
		t.Fatal(err)
	}
	if life := first.Leaf.NotAfter.Sub(first.Leaf.NotBefore); life > FleetCertValidity+time.Minute {
		t.Errorf("the backend's client certificate is valid for %v, want at most %v", life, FleetCertValidity+time.Minute)
	}
	now = now.Add(FleetCertValidity / 2)
	if same, err := rc.get(nil); err != nil || same.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Errorf("renewed at half its validity (%v)", err)
	}
	now = now.Add(FleetCertValidity / 4)
	renewed, err := rc.get(nil)
	if err != nil || renewed.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatalf("not renewed at three quarters of its validity (%v)", err)
	}
	if !renewed.Leaf.NotAfter.After(now.Add(FleetCertValidity / 2)) {
		t.Errorf("the renewed certificate expires at %v, soon after now %v", renewed.Leaf.NotAfter, now)
	}
}
