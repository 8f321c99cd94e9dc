package testutil

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPostgresURL checks that each test gets its own empty, writable
// database, and that it is gone once the test ends.
func TestPostgresURL(t *testing.T) {
	ctx := context.Background()
	var first, second string
	t.Run("first", func(t *testing.T) {
		first = PostgresURL(t)
		conn, err := pgx.Connect(ctx, first)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "CREATE TABLE leases (id text PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO leases VALUES ('a')"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("second", func(t *testing.T) {
		second = PostgresURL(t)
		conn, err := pgx.Connect(ctx, second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("a new test database has %d tables, want 0", n)
		}
	})
	if first == "" || second == "" {
		t.Skip("SKIPPED, NEEDS POSTGRESQL: see the subtests' messages")
	}
	if first == second {
		t.Fatalf("two tests got the same database %s", first)
	}
	admin := os.Getenv("GCEFLEET_TEST_POSTGRES")
	if admin == "" {
		admin = DefaultPostgres
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, u := range []string{first, second} {
		parsed, _ := url.Parse(u)
		name := strings.TrimPrefix(parsed.Path, "/")
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists {
			t.Errorf("database %s still exists after its test ended", name)
		}
	}
}
