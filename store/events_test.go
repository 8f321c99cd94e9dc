package store

import (
	"context"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
)

// TestPostgresEventsCommitInOrder: a backend reads the event feed from a
// cursor, so an event must never become visible after one with a larger
// id. On PostgreSQL two transactions can hold ids from the sequence at
// once; the second to take one must wait for the first to commit, or a
// reader in between would move its cursor past the first's event and
// never see it.
func TestPostgresEventsCommitInOrder(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, testutil.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var leases []Lease
	for _, h := range []string{"m1", "m2"} {
		if _, err := s.AddMachine(ctx, Machine{Hostname: h, Backend: "gce", Dimensions: Dimensions{"host": {h}}}); err != nil {
			t.Fatal(err)
		}
		l, _, err := s.RequestLease(ctx, "c", LeaseRequest{RequestID: h, Dimensions: Dimensions{"host": {h}}, Term: Term{Duration: time.Hour}})
		if err != nil || l.Hostname != h {
			t.Fatalf("lease of %s: %+v, %v", h, l, err)
		}
		leases = append(leases, l)
	}
	before, err := s.Events(ctx, "", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	cursor := before[len(before)-1].ID

	// The first transaction reclaims m1 and holds its event uncommitted
	// (as the expiry loop's transaction would, or another replica's).
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := s.end(ctx, tx, leases[0].ID, "m1", Expired, time.Now()); err != nil {
		t.Fatal(err)
	}
	// The second, a release of m2, must wait for it.
	released := make(chan error, 1)
	go func() {
		_, _, err := s.ReleaseLease(ctx, "c", leases[1].ID)
		released <- err
	}()
	testutil.WaitFor(t, "the release to wait for the uncommitted event", func() bool {
		var waiting int
		s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").Scan(&waiting)
		return waiting > 0
	})
	if evs, err := s.Events(ctx, "", cursor, 100); err != nil || len(evs) != 0 {
		t.Fatalf("events while the first is uncommitted: %+v, %v; want none", evs, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	evs, err := s.Events(ctx, "", cursor, 100)
	if err != nil || len(evs) != 2 || evs[0].Hostname != "m1" || evs[1].Hostname != "m2" {
		t.Fatalf("events after both committed: %+v, %v; want m1's reclaim, then m2's", evs, err)
	}
}
