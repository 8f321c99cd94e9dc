// Package testutil holds helpers shared by gcefleet's tests: each gives a
// test a real component of its own (a PostgreSQL database, an emulator) and
// cleans it up afterwards.
package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultPostgres is the server the tests use when GCEFLEET_TEST_POSTGRES is
// unset: a local PostgreSQL with trust authentication.
const DefaultPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// PostgresURL returns the connection URL of a fresh, empty database that
// exists for the test alone and is dropped when it ends.
//
// The server comes from GCEFLEET_TEST_POSTGRES (default DefaultPostgres).
// When it cannot be reached the test fails if CI=true, and is skipped with a
// loud message otherwise, so that the suite still passes on a machine with
// only Go installed.
func PostgresURL(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("GCEFLEET_TEST_POSTGRES")
	if admin == "" {
		admin = DefaultPostgres
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL is not reachable at %s: %v\n"+
			"Start one (see README.md, \"PostgreSQL for the tests\") or point GCEFLEET_TEST_POSTGRES at one.", redact(admin), err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		// go test ./... shows nothing of a passing package but its "ok"
		// line, so say it where the person running the tests sees it.
		loud(fmt.Sprintf("%s: SKIPPED, NEEDS POSTGRESQL (PostgreSQL is not reachable at %s; see README.md)\n", t.Name(), redact(admin)))
		t.Skip("SKIPPED, NEEDS POSTGRESQL: " + msg)
	}
	defer conn.Close(context.Background())

	var b [6]byte
	rand.Read(b[:])
	name := "gcefleet_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating test database %s on %s: %v", name, redact(admin), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("dropping test database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping test database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("GCEFLEET_TEST_POSTGRES: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// redact hides a password in a connection URL for messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// loud writes msg to the terminal running the tests, or to standard error
// when there is none.
func loud(msg string) {
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		defer tty.Close()
		tty.WriteString(msg)
		return
	}
	os.Stderr.WriteString(msg)
}
