package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
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

// oldSQLite makes a SQLite database at the schema's given version and
// returns its path and a connection to it, closed when the test ends.
func oldSQLite(t *testing.T, version int) (string, *sql.DB) {
	t.Helper()
	path := t.TempDir() + "/old.db"
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	old := &Store{db: db, Now: time.Now}
	if err := old.migrate(context.Background(), migrations[:version]); err != nil {
		t.Fatal(err)
	}
	return path, db
}

// TestSQLiteMigration7KeepsDimensions: a catalog and a waiting request
// written while SQLite kept dimensions in tables of their own still match
// after they moved into their rows.
func TestSQLiteMigration7KeepsDimensions(t *testing.T) {
	ctx := context.Background()
	path, db := oldSQLite(t, 6)
	now := time.Now()
	m := Machine{Hostname: "m1", Backend: "gce", Dimensions: Dimensions{"os": {"linux"}, "cpus": {"8"}}, Policies: Policies{OnReclaim: "DELETE"}}
	for _, q := range []string{
		"INSERT INTO machines (hostname, backend, body, state, added_at) VALUES ('m1', 'gce', '" + machineBody(m) + "', 'AVAILABLE', 1)",
		"INSERT INTO machine_dims (hostname, k, v) VALUES ('m1', 'os', 'linux'), ('m1', 'cpus', '8')",
		`INSERT INTO leases (id, client, request_id, body, state, created_at, deadline, duration_ns, expires_at, indefinite)
			VALUES ('l1', 'c', 'r1', '{"dimensions":{"os":["mac"]},"term":{"indefinite":true}}', 'PENDING', 1, ` + fmt.Sprint(now.Add(time.Hour).UnixNano()) + `, 0, 0, 1)`,
		"INSERT INTO lease_dims (lease_id, k, v) VALUES ('l1', 'os', 'mac')",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, _, err := s.RequestLease(ctx, "c", LeaseRequest{RequestID: "r2", Dimensions: Dimensions{"cpus": {"8"}, "os": {"linux"}}, Term: Term{Duration: time.Hour}})
	if err != nil || l.State != Fulfilled || l.Hostname != "m1" {
		t.Fatalf("lease after migrating: %+v, %v; want m1 fulfilled", l, err)
	}
	// The old waiting request gets a machine with its dimensions, and
	// only such a machine.
	if _, err := s.AddMachine(ctx, Machine{Hostname: "linux2", Backend: "gce", Dimensions: Dimensions{"os": {"linux"}}}); err != nil {
		t.Fatal(err)
	}
	mac, err := s.AddMachine(ctx, Machine{Hostname: "mac1", Backend: "gce", Dimensions: Dimensions{"os": {"mac"}}})
	if err != nil || mac.LeaseID != "l1" {
		t.Fatalf("adding a mac: %+v, %v; want it leased at once to l1", mac, err)
	}
}

// TestOpenCurrentChangesNothing: opened for looking, an older database
// is refused with what to do, and left as it was; a current one opens.
func TestOpenCurrentChangesNothing(t *testing.T) {
	ctx := context.Background()
	path, db := oldSQLite(t, 6)
	_, err := OpenCurrent(ctx, path)
	if err == nil || !strings.Contains(err.Error(), "schema version 6, older") || !strings.Contains(err.Error(), "serve") {
		t.Fatalf("OpenCurrent of an older database: %v", err)
	}
	var version int
	if err := db.QueryRowContext(ctx, "SELECT version FROM schema_version").Scan(&version); err != nil || version != 6 {
		t.Errorf("schema version after OpenCurrent: %d, %v; want 6, untouched", version, err)
	}
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenCurrent(ctx, path)
	if err != nil {
		t.Fatalf("OpenCurrent of a current database: %v", err)
	}
	s.Close()
}

// TestMigration9QueuesWaitingRequests: requests waiting before the queue
// was indexed by shape (migration 9) are offered new machines after, in
// order, on both databases.
func TestMigration9QueuesWaitingRequests(t *testing.T) {
	ctx := context.Background()
	deadline := fmt.Sprint(time.Now().Add(time.Hour).UnixNano())
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			url := "sqlite:" + t.TempDir() + "/old.db"
			kvs := []string{`'["os=mac"]'`, `'["cpus=8","os=mac"]'`, `'[]'`}
			if db == "postgres" {
				url = testutil.PostgresURL(t)
				kvs = []string{`'{os=mac}'`, `'{os=mac,cpus=8}'`, `'{}'`}
			}
			var conn *sql.DB
			var err error
			if db == "postgres" {
				conn, err = sql.Open("pgx", url)
			} else {
				conn, err = sql.Open("sqlite", "file:"+url[len("sqlite:"):])
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			old := &Store{db: conn, postgres: db == "postgres", Now: time.Now}
			if err := old.migrate(ctx, migrations[:8]); err != nil {
				t.Fatal(err)
			}
			for i, kv := range kvs {
				if _, err := conn.ExecContext(ctx, `INSERT INTO leases (id, client, request_id, body, state, created_at, deadline, duration_ns, expires_at, indefinite, kv)
					VALUES ('l`+fmt.Sprint(i)+`', 'c', 'r`+fmt.Sprint(i)+`', '{"term":{"indefinite":true}}', 'PENDING', `+fmt.Sprint(i+1)+`, `+deadline+`, 0, 0, `+map[bool]string{true: "TRUE", false: "1"}[db == "postgres"]+`, `+kv+`)`); err != nil {
					t.Fatal(err)
				}
			}
			conn.Close()
			s, err := Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, c := range []struct {
				host  string
				dims  Dimensions
				lease string
			}{
				{"linux1", Dimensions{"os": {"linux"}, "cpus": {"8"}}, "l2"}, // only the request for nothing
				{"mac1", Dimensions{"os": {"mac"}, "cpus": {"8"}}, "l0"},
				{"mac2", Dimensions{"os": {"mac"}, "cpus": {"8"}}, "l1"},
				{"mac3", Dimensions{"os": {"mac"}, "cpus": {"8"}}, ""},
			} {
				m, err := s.AddMachine(ctx, Machine{Hostname: c.host, Backend: "gce", Dimensions: c.dims})
				if err != nil || m.LeaseID != c.lease {
					t.Errorf("adding %s: lease %q, %v; want %q", c.host, m.LeaseID, err, c.lease)
				}
			}
		})
	}
}
