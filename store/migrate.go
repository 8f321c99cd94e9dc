package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// migration is one version of the schema.
type migration struct {
	// sql is for both databases: statements split at ";", with
	// {{serial}} and {{bool}} for the types that differ.
	sql string
	// sqlite is for SQLite only, split at ";" and run before sql.
	sqlite string
	// sqliteWhole is for SQLite only, each statement run whole (trigger
	// bodies hold ";"), after sql.
	sqliteWhole []string
	// postgres is for PostgreSQL only, each statement run whole (function
	// bodies hold ";"), after sql.
	postgres []string
}

// migrations are the schema's versions, applied in order at Open.
var migrations = []migration{
	// 1: catalog, leases, events.
	{sql: `CREATE TABLE machines (
		hostname TEXT PRIMARY KEY,
		backend  TEXT NOT NULL,
		body     TEXT NOT NULL,
		state    TEXT NOT NULL,
		lease_id TEXT,
		added_at BIGINT NOT NULL
	);
	CREATE INDEX machines_available ON machines (state, added_at, hostname);
	CREATE INDEX machines_backend ON machines (backend);
	CREATE TABLE machine_dims (
		hostname TEXT NOT NULL,
		k        TEXT NOT NULL,
		v        TEXT NOT NULL,
		PRIMARY KEY (hostname, k, v)
	);
	CREATE INDEX machine_dims_kv ON machine_dims (k, v);
	CREATE TABLE leases (
		id           TEXT PRIMARY KEY,
		client       TEXT NOT NULL,
		request_id   TEXT NOT NULL,
		body         TEXT NOT NULL,
		state        TEXT NOT NULL,
		hostname     TEXT,
		machine      TEXT,
		created_at   BIGINT NOT NULL,
		deadline     BIGINT NOT NULL,
		duration_ns  BIGINT NOT NULL,
		expires_at   BIGINT NOT NULL,
		indefinite   {{bool}} NOT NULL,
		fulfilled_at BIGINT NOT NULL DEFAULT 0,
		ended_at     BIGINT NOT NULL DEFAULT 0,
		UNIQUE (client, request_id)
	);
	CREATE INDEX leases_state_created ON leases (state, created_at);
	CREATE INDEX leases_state_expires ON leases (state, expires_at);
	CREATE TABLE lease_dims (
		lease_id TEXT NOT NULL,
		k        TEXT NOT NULL,
		v        TEXT NOT NULL,
		PRIMARY KEY (lease_id, k, v)
	);
	CREATE TABLE events (
		id         {{serial}},
		backend    TEXT NOT NULL,
		kind       TEXT NOT NULL,
		hostname   TEXT NOT NULL,
		lease_id   TEXT NOT NULL,
		on_reclaim TEXT,
		at         BIGINT NOT NULL
	);
	CREATE INDEX events_backend ON events (backend, id);`},
	// 2: find a hostname's reclaim, so that it is never cataloged again.
	{sql: `CREATE INDEX events_hostname ON events (hostname, kind);`},
	// 3: PostgreSQL does the hot paths (add a machine, request and release
	// a lease) in one call each: a round trip per statement cost more
	// than the statements. Its dimensions become arrays of "key=value"
	// (keys hold no "="), so that a match is one containment test on the
	// row (machine_dims and lease_dims are written no more; migration 7
	// drops them).
	{postgres: slices.Concat([]string{
		`ALTER TABLE machines ADD COLUMN kv TEXT[] NOT NULL DEFAULT '{}'`,
		`UPDATE machines SET kv = ARRAY(SELECT d.k || '=' || d.v FROM machine_dims d WHERE d.hostname = machines.hostname)`,
		`ALTER TABLE leases ADD COLUMN kv TEXT[] NOT NULL DEFAULT '{}'`,
		`UPDATE leases SET kv = ARRAY(SELECT d.k || '=' || d.v FROM lease_dims d WHERE d.lease_id = leases.id)`,
	}, pgFunctions)},
	// 4: state of the services beside the provider (the GCE Backend's),
	// and who among replicas leads each.
	{sql: `CREATE TABLE kv (
		k TEXT PRIMARY KEY,
		v TEXT NOT NULL
	);
	CREATE TABLE leaders (
		name       TEXT PRIMARY KEY,
		holder     TEXT NOT NULL,
		expires_at BIGINT NOT NULL
	);`},
	// 5: the hot paths always walk their indexes. A function's plans are
	// made at its first call in a session and kept; made while the tables
	// were small, they scanned them whole for ever after (the catalog
	// filled in time quadratic in its size), and with stale statistics a
	// search sorted every available machine to take the first.
	{postgres: pgIndexOnly("gcefleet_assign", "gcefleet_find", "gcefleet_add_machine",
		"gcefleet_request_lease", "gcefleet_release_lease")},
	// 6: replicas hear of each other's changes (see Listen) at commit.
	{postgres: []string{
		`CREATE FUNCTION gcefleet_changed() RETURNS trigger AS $$
		BEGIN
			PERFORM pg_notify('` + changesChannel + `', '');
			RETURN NULL;
		END $$ LANGUAGE plpgsql`,
		`CREATE TRIGGER events_changed AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION gcefleet_changed()`,
		`CREATE TRIGGER leases_changed AFTER UPDATE ON leases FOR EACH STATEMENT EXECUTE FUNCTION gcefleet_changed()`,
	}},
	// 7: fewer index and page writes a lease. On SQLite, dimensions are a
	// column of their row ("key=value" strings as a JSON array, as
	// PostgreSQL's kv arrays since 3), not three rows in a table of three
	// b-trees (PostgreSQL never wrote the dimension tables). On both, the
	// indexes that find machines and leases by state hold only the rows
	// in that state: a lease fulfilled at once and released never enters
	// the queue's index, nor a released one the expiry's.
	{sqlite: `ALTER TABLE machines ADD COLUMN kv TEXT NOT NULL DEFAULT '[]';
	UPDATE machines SET kv = (SELECT json_group_array(d.k || '=' || d.v) FROM machine_dims d WHERE d.hostname = machines.hostname);
	ALTER TABLE leases ADD COLUMN kv TEXT NOT NULL DEFAULT '[]';
	UPDATE leases SET kv = (SELECT json_group_array(d.k || '=' || d.v) FROM lease_dims d WHERE d.lease_id = leases.id) WHERE state = 'PENDING';
	DROP TABLE machine_dims;
	DROP TABLE lease_dims`,
		sql: `DROP INDEX machines_available;
	CREATE INDEX machines_available ON machines (added_at, hostname) WHERE state = 'AVAILABLE';
	DROP INDEX leases_state_created;
	CREATE INDEX leases_pending ON leases (created_at, id) WHERE state = 'PENDING';
	DROP INDEX leases_state_expires;
	CREATE INDEX leases_fulfilled ON leases (expires_at) WHERE state = 'FULFILLED';
	DROP INDEX events_hostname;
	CREATE INDEX events_reclaimed ON events (hostname) WHERE kind = 'reclaimed'`,
		postgres: []string{`DROP TABLE machine_dims`, `DROP TABLE lease_dims`}},
	// 8: PostgreSQL's events commit in the order of their ids (see
	// eventsLock); SQLite has one writer.
	{postgres: []string{
		`CREATE FUNCTION gcefleet_events_in_order() RETURNS trigger AS $$
		BEGIN
			PERFORM pg_advisory_xact_lock(` + eventsLock + `);
			RETURN NULL;
		END $$ LANGUAGE plpgsql`,
		`CREATE TRIGGER events_in_order BEFORE INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION gcefleet_events_in_order()`,
	}},
	// 9: a machine is matched against the queue by index (see
	// queueSQLite), and the queue is capped per client
	// (leases_pending_client counts a client's pending requests). On
	// PostgreSQL, the functions that queuePostgres replaces walk their
	// indexes, as in migration 5.
	{sql: `CREATE TABLE queue (
		shape      TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		lease_id   TEXT NOT NULL,
		deadline   BIGINT NOT NULL,
		PRIMARY KEY (shape, created_at, lease_id)
	){{withoutRowid}};
	CREATE TABLE queue_shapes (
		kv    TEXT NOT NULL,
		shape TEXT NOT NULL,
		ndims INTEGER NOT NULL,
		PRIMARY KEY (kv, shape)
	){{withoutRowid}};
	CREATE INDEX leases_pending_client ON leases (client) WHERE state = 'PENDING'`,
		sqliteWhole: queueSQLite,
		postgres: slices.Concat(queuePostgres, pgIndexOnly("gcefleet_add_machine",
			"gcefleet_request_lease(TEXT, TEXT, TEXT, TEXT, BIGINT, BIGINT, BIGINT, BIGINT, BOOLEAN, TEXT[], INTEGER)"))},
	// 10: PostgreSQL's notifications say which lease changed (see Listen).
	{postgres: changesPostgres},
	// 11: what backends offer to make (see PutOffers), and, on
	// PostgreSQL, a notification when the queue changes (a request
	// queued, or one that leaves it), which wakes the demand long polls
	// of every replica.
	{sql: `CREATE TABLE offers (
		backend    TEXT PRIMARY KEY,
		body       TEXT NOT NULL,
		expires_at BIGINT NOT NULL
	)`, postgres: demandPostgres},
}

// pgIndexOnly makes PostgreSQL functions plan their statements as index
// scans, each of which finds a row or two by key or takes the first in
// an index's order.
func pgIndexOnly(functions ...string) []string {
	var out []string
	for _, f := range functions {
		out = append(out, "ALTER FUNCTION "+f+" SET enable_seqscan = off",
			"ALTER FUNCTION "+f+" SET enable_bitmapscan = off")
	}
	return out
}

// checkVersion fails unless the database's schema is migrations' last.
func (s *Store) checkVersion(ctx context.Context, migrations []migration) error {
	var version int
	if err := s.db.QueryRowContext(ctx, "SELECT version FROM schema_version").Scan(&version); err != nil {
		return fmt.Errorf("store: reading the schema version: %w (is this the database gcefleet serve uses?)", err)
	}
	switch {
	case version > len(migrations):
		return tooNew(version, len(migrations))
	case version < len(migrations):
		return fmt.Errorf("store: the database has schema version %d, older than this gcefleet's (%d), and is not changed here; start this gcefleet's serve on it once to migrate it", version, len(migrations))
	}
	return nil
}

// tooNew refuses a database whose schema a later gcefleet wrote.
func tooNew(version, known int) error {
	return fmt.Errorf("store: the database has schema version %d, newer than this gcefleet knows (%d); upgrade gcefleet", version, known)
}

// migrate brings the schema up to date, in one transaction per version.
// On PostgreSQL an advisory lock keeps replicas starting together from
// migrating twice.
func (s *Store) migrate(ctx context.Context, migrations []migration) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if s.postgres {
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(7209)"); err != nil {
			return fmt.Errorf("store: migration lock: %w", err)
		}
		defer conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock(7209)")
	}
	if _, err := conn.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"); err != nil {
		return fmt.Errorf("store: schema_version: %w", err)
	}
	var version int
	err = conn.QueryRowContext(ctx, "SELECT version FROM schema_version").Scan(&version)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := conn.ExecContext(ctx, "INSERT INTO schema_version (version) VALUES (0)"); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("store: reading the schema version: %w", err)
	}
	if version > len(migrations) {
		return tooNew(version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		var stmts []string
		if !s.postgres {
			stmts = strings.Split(migrations[v].sqlite, ";")
		}
		stmts = append(stmts, strings.Split(s.dialect(migrations[v].sql), ";")...)
		if s.postgres {
			stmts = append(stmts, migrations[v].postgres...)
		} else {
			stmts = append(stmts, migrations[v].sqliteWhole...)
		}
		for _, stmt := range stmts {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				tx.Rollback()
				return fmt.Errorf("store: migration %d: %w", v+1, err)
			}
		}
		update := "UPDATE schema_version SET version = ?"
		if s.postgres {
			update = numbered(update)
		}
		if _, err := tx.ExecContext(ctx, update, v+1); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("store: migration %d: %w", v+1, err)
		}
	}
	return nil
}

func (s *Store) dialect(stmt string) string {
	if s.postgres {
		return strings.NewReplacer("{{serial}}", "BIGSERIAL PRIMARY KEY", "{{bool}}", "BOOLEAN", "{{withoutRowid}}", "").Replace(stmt)
	}
	return strings.NewReplacer("{{serial}}", "INTEGER PRIMARY KEY AUTOINCREMENT", "{{bool}}", "INTEGER", "{{withoutRowid}}", " WITHOUT ROWID").Replace(stmt)
}
