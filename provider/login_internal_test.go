package provider

import (
	"testing"
	"time"
)

// TestSessionsBounded checks that sessions expire and that no number of
// sign-ins keeps more than maxSessions.
func TestSessionsBounded(t *testing.T) {
	ss := newSessions()
	now := time.Now()
	first := ss.start(Principal{Name: "ops", Role: Admin}, now)
	if p, ok := ss.lookup(first, now.Add(sessionTTL-time.Second)); !ok || p.Name != "ops" {
		t.Fatalf("a fresh session: %v %v", p, ok)
	}
	if _, ok := ss.lookup(first, now.Add(sessionTTL+time.Second)); ok {
		t.Fatal("a session outlived its TTL")
	}
	var ids []string
	for i := range maxSessions + 50 {
		ids = append(ids, ss.start(Principal{Name: "ops", Role: Admin}, now.Add(time.Duration(i)*time.Millisecond)))
	}
	if n := len(ss.byID); n != maxSessions {
		t.Fatalf("%d sessions kept; want at most %d", n, maxSessions)
	}
	if _, ok := ss.lookup(ids[0], now); ok {
		t.Error("the oldest session survived the bound")
	}
	if _, ok := ss.lookup(ids[len(ids)-1], now); !ok {
		t.Error("the newest session was dropped")
	}
}

func TestChartHelpers(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		t    time.Time
		want string
	}{
		{now.Add(-3*time.Minute - 10*time.Second), "3 min ago"},
		{now.Add(5*time.Minute + time.Second), "in 5 min"},
		{now.Add(-90 * time.Minute), "1 h 30 min ago"},
		{now.Add(-72 * time.Hour), "3 d ago"},
		{time.Time{}, "—"},
	} {
		if got := relative(now, c.t); got != c.want {
			t.Errorf("relative(%v) = %q; want %q", now.Sub(c.t), got, c.want)
		}
	}
	h := newHistory()
	for i := range historyPoints + 10 {
		h.add(point{at: now.Add(time.Duration(i) * time.Second), active: i})
	}
	if pts := h.snapshot(); len(pts) != historyPoints || pts[len(pts)-1].active != historyPoints+9 || pts[0].active != 10 {
		t.Fatalf("ring: %d points, first %d, last %d", len(pts), pts[0].active, pts[len(pts)-1].active)
	}
}
