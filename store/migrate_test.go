package store

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
)

// TestPostgresMigration3KeepsTheCatalog: a catalog written before the
// dimensions moved into arrays still matches lease requests after.
func TestPostgresMigration3KeepsTheCatalog(t *testing.T) {
	ctx := context.Background()
	url := testutil.PostgresURL(t)
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	old := &Store{db: db, postgres: true, Now: time.Now}
	if err := old.migrate(ctx, migrations[:2]); err != nil {
		t.Fatal(err)
	}
	m := Machine{Hostname: "m1", Backend: "gce", Dimensions: Dimensions{"os": {"linux"}, "cpus": {"8"}}, Policies: Policies{OnReclaim: "DELETE"}}
	if _, err := db.ExecContext(ctx, "INSERT INTO machines (hostname, backend, body, state, added_at) VALUES ($1, $2, $3, $4, $5)",
		m.Hostname, m.Backend, machineBody(m), Available, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO machine_dims (hostname, k, v) VALUES ('m1', 'os', 'linux'), ('m1', 'cpus', '8')"); err != nil {
		t.Fatal(err)
	}

	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, _, err := s.RequestLease(ctx, "c", LeaseRequest{RequestID: "r", Dimensions: Dimensions{"cpus": {"8"}}, Term: Term{Duration: time.Hour}})
	if err != nil || l.State != Fulfilled || l.Hostname != "m1" {
		t.Fatalf("lease after migrating: %+v, %v; want m1 fulfilled", l, err)
	}
}
