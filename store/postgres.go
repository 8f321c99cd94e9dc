package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// matchLock is the advisory lock that makes a request that finds no
// machine and a machine being added meet: adds hold it shared until they
// commit; a request about to wait takes it exclusively and looks again,
// so it sees every machine added before, and every machine added after
// sees it pending. Requests that find a machine, and adds, never wait
// for each other.
const matchLock = "7210"

// eventsLock makes PostgreSQL's events commit in the order of their ids,
// which backends read the feed by: a transaction takes it before its
// first event takes an id (a trigger does) and holds it until it ends.
// Without it, two transactions could hold ids at once and the larger
// commit first; a reader in between would move its cursor past the
// smaller and never see it. Transactions that write events take it
// first of all (the committer's batches, Expire), so that it is never
// waited for while holding a lock that its holder may want.
const eventsLock = "7211"

// postgresDB is the engine of a PostgreSQL database: a pool of
// connections, whose driver caches statements itself, and a committer
// that sends the hot paths' calls (functions of the database's own, see
// pgFunctions) together on a connection of its own.
type postgresDB struct {
	db   *sql.DB
	url  string    // for Listen's connection of its own
	conn *sql.Conn // the committer's
	c    *committer[pgCall]
}

// openPostgres opens the database at url.
func openPostgres(url string) (*sql.DB, error) {
	db, err := sql.Open("pgx", url)
	if err == nil {
		// More connections than this measured no faster on two cores:
		// the database's own processes need the CPU.
		db.SetMaxOpenConns(8)
	}
	return db, err
}

// newPostgres starts the engine of db, opened by openPostgres(url) and
// migrated.
func newPostgres(db *sql.DB, url string) *postgresDB {
	d := &postgresDB{db: db, url: url}
	d.c = newCommitter(d.runPgBatch)
	return d
}

func (d *postgresDB) name() string { return "postgres" }

func (d *postgresDB) close() {
	d.c.close()
	if d.conn != nil {
		d.conn.Close()
	}
}

// numbered rewrites ? placeholders as PostgreSQL's $1, $2, ...
func numbered(query string) string {
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// exec, query and queryRow run a statement in tx, or outside any
// transaction when tx is nil (reads).
func (d *postgresDB) exec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	if tx == nil {
		return d.db.ExecContext(ctx, numbered(query), args...)
	}
	return tx.ExecContext(ctx, numbered(query), args...)
}

func (d *postgresDB) query(ctx context.Context, tx *sql.Tx, query string, args ...any) (*sql.Rows, error) {
	if tx == nil {
		return d.db.QueryContext(ctx, numbered(query), args...)
	}
	return tx.QueryContext(ctx, numbered(query), args...)
}

func (d *postgresDB) queryRow(ctx context.Context, tx *sql.Tx, query string, args ...any) *sql.Row {
	if tx == nil {
		return d.db.QueryRowContext(ctx, numbered(query), args...)
	}
	return tx.QueryRowContext(ctx, numbered(query), args...)
}

// tx runs f in a transaction, retrying when PostgreSQL reports a
// serialization failure or deadlock.
func (d *postgresDB) tx(ctx context.Context, f func(*sql.Tx) error) error {
	return d.retry(ctx, func() error {
		tx, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("store: begin: %w", err)
		}
		if err := f(tx); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	})
}

// read runs f with tx nil: each of its statements sees what was committed
// when it began.
func (d *postgresDB) read(ctx context.Context, f func(*sql.Tx) error) error {
	return f(nil)
}

// forUpdate locks selected rows, skipping rows another transaction
// holds; forShare keeps a row read from changing until commit.
func (d *postgresDB) forUpdate() string { return " FOR UPDATE SKIP LOCKED" }
func (d *postgresDB) forShare() string  { return " FOR SHARE" }

// onReclaim is the SQL for a machine's reclamation policy, read from its
// body in the database (no decoding of the whole body for one field).
func (d *postgresDB) onReclaim() string {
	return "COALESCE(body::jsonb #>> '{policies,on_reclaim}', '')"
}

// lockEvents takes eventsLock for the rest of tx.
func (d *postgresDB) lockEvents(ctx context.Context, tx *sql.Tx) error {
	_, err := d.exec(ctx, tx, "SELECT pg_advisory_xact_lock("+eventsLock+")")
	return err
}

// maintain refreshes the planner's statistics (see Maintain).
func (d *postgresDB) maintain(ctx context.Context) error {
	_, err := d.db.ExecContext(ctx, "ANALYZE machines, leases")
	return err
}

// pgFunctions are the PostgreSQL functions behind AddMachine, RequestLease
// and ReleaseLease. They do what the SQLite paths in store.go do, step for
// step; the conformance suite holds both to the same behaviour.
var pgFunctions = []string{
	// Dimensions as arrays of "key=value" (keys hold no "="), so that a
	// match is one containment test on the row (machine_dims and
	// lease_dims are written no more; migration 7 drops them).
	`ALTER TABLE machines ADD COLUMN kv TEXT[] NOT NULL DEFAULT '{}'`,
	`UPDATE machines SET kv = ARRAY(SELECT d.k || '=' || d.v FROM machine_dims d WHERE d.hostname = machines.hostname)`,
	`ALTER TABLE leases ADD COLUMN kv TEXT[] NOT NULL DEFAULT '{}'`,
	`UPDATE leases SET kv = ARRAY(SELECT d.k || '=' || d.v FROM lease_dims d WHERE d.lease_id = leases.id)`,

	// gcefleet_assign gives available machine host to pending lease id.
	`CREATE FUNCTION gcefleet_assign(p_id TEXT, p_dur BIGINT, p_exp BIGINT, p_indef BOOLEAN,
		p_host TEXT, p_backend TEXT, p_body TEXT, p_now BIGINT) RETURNS VOID AS $$
	BEGIN
		UPDATE machines SET state = 'LEASED', lease_id = p_id WHERE hostname = p_host;
		UPDATE leases SET state = 'FULFILLED', hostname = p_host, machine = p_body, fulfilled_at = p_now,
			expires_at = CASE WHEN p_dur > 0 THEN p_now + p_dur WHEN NOT p_indef THEN p_exp ELSE 0 END
			WHERE id = p_id;
		INSERT INTO events (backend, kind, hostname, lease_id, on_reclaim, at)
			VALUES (p_backend, 'leased', p_host, p_id, '', p_now);
	END $$ LANGUAGE plpgsql`,

	// gcefleet_find gives pending lease id the first available machine
	// that has every dimension of p_kv.
	`CREATE FUNCTION gcefleet_find(p_id TEXT, p_dur BIGINT, p_exp BIGINT, p_indef BOOLEAN,
		p_kv TEXT[], p_now BIGINT) RETURNS BOOLEAN AS $$
	DECLARE
		v_host TEXT; v_backend TEXT; v_body TEXT;
	BEGIN
		SELECT hostname, backend, body INTO v_host, v_backend, v_body FROM machines
			WHERE state = 'AVAILABLE' AND kv @> p_kv
			ORDER BY added_at, hostname LIMIT 1 FOR UPDATE SKIP LOCKED;
		IF NOT FOUND THEN
			RETURN FALSE;
		END IF;
		PERFORM gcefleet_assign(p_id, p_dur, p_exp, p_indef, v_host, v_backend, v_body, p_now);
		RETURN TRUE;
	END $$ LANGUAGE plpgsql`,

	// gcefleet_add_machine catalogs a machine and offers it to the oldest
	// pending request it satisfies. o_status is added (o_lease: the lease
	// it went to, if any), same, conflict (o_lease: the body on record) or
	// reclaimed.
	`CREATE FUNCTION gcefleet_add_machine(p_host TEXT, p_backend TEXT, p_body TEXT, p_now BIGINT,
		p_kv TEXT[]) RETURNS TABLE (o_status TEXT, o_lease TEXT) AS $$
	DECLARE
		v_old TEXT; l leases%ROWTYPE;
	BEGIN
		PERFORM pg_advisory_xact_lock_shared(` + matchLock + `);
		SELECT body INTO v_old FROM machines WHERE hostname = p_host;
		IF FOUND THEN
			o_status := CASE WHEN v_old = p_body THEN 'same' ELSE 'conflict' END;
			o_lease := v_old;
			RETURN NEXT;
			RETURN;
		END IF;
		IF EXISTS (SELECT 1 FROM events WHERE hostname = p_host AND kind = 'reclaimed') THEN
			o_status := 'reclaimed';
			RETURN NEXT;
			RETURN;
		END IF;
		INSERT INTO machines (hostname, backend, body, state, added_at, kv) VALUES (p_host, p_backend, p_body, 'AVAILABLE', p_now, p_kv);
		o_status := 'added';
		SELECT * INTO l FROM leases WHERE state = 'PENDING' AND deadline > p_now AND kv <@ p_kv
			ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED;
		IF FOUND THEN
			PERFORM gcefleet_assign(l.id, l.duration_ns, l.expires_at, l.indefinite, p_host, p_backend, p_body, p_now);
			o_lease := l.id;
		END IF;
		RETURN NEXT;
	END $$ LANGUAGE plpgsql`,

	// gcefleet_request_lease records a lease request and fulfils it if a
	// machine matches. It answers with the lease's row, after o_status:
	// new, repeat (the same request again) or reuse (the request id was
	// used for another request, whose body is o_old).
	`CREATE FUNCTION gcefleet_request_lease(p_id TEXT, p_client TEXT, p_request_id TEXT, p_body TEXT,
		p_now BIGINT, p_deadline BIGINT, p_dur BIGINT, p_exp BIGINT, p_indef BOOLEAN, p_kv TEXT[])
		RETURNS TABLE (o_status TEXT, o_old TEXT, ` + pgLeaseTable + `) AS $$
	DECLARE
		v_id TEXT; v_old TEXT; v_status TEXT := 'new'; v_host TEXT; v_backend TEXT; v_body TEXT;
	BEGIN
		SELECT id, body INTO v_id, v_old FROM leases WHERE client = p_client AND request_id = p_request_id;
		IF FOUND THEN
			v_status := CASE WHEN v_old = p_body THEN 'repeat' ELSE 'reuse' END;
		ELSE
			v_id := p_id;
			-- A request fulfilled at once is written once, FULFILLED: a
			-- PENDING version first would leave a dead entry in each index
			-- for every lease, which the next searches wade through.
			SELECT hostname, backend, body INTO v_host, v_backend, v_body FROM machines
				WHERE state = 'AVAILABLE' AND kv @> p_kv
				ORDER BY added_at, hostname LIMIT 1 FOR UPDATE SKIP LOCKED;
			IF FOUND THEN
				INSERT INTO leases (id, client, request_id, body, state, hostname, machine, created_at, deadline,
					duration_ns, expires_at, indefinite, fulfilled_at, kv)
					VALUES (p_id, p_client, p_request_id, p_body, 'FULFILLED', v_host, v_body, p_now, p_deadline,
					p_dur, CASE WHEN p_dur > 0 THEN p_now + p_dur WHEN NOT p_indef THEN p_exp ELSE 0 END, p_indef, p_now, p_kv);
				UPDATE machines SET state = 'LEASED', lease_id = p_id WHERE hostname = v_host;
				INSERT INTO events (backend, kind, hostname, lease_id, on_reclaim, at)
					VALUES (v_backend, 'leased', v_host, p_id, '', p_now);
			ELSE
				INSERT INTO leases (id, client, request_id, body, state, created_at, deadline, duration_ns, expires_at, indefinite, kv)
					VALUES (p_id, p_client, p_request_id, p_body, 'PENDING', p_now, p_deadline, p_dur, p_exp, p_indef, p_kv);
				PERFORM pg_advisory_xact_lock(` + matchLock + `);
				PERFORM gcefleet_find(p_id, p_dur, p_exp, p_indef, p_kv, p_now);
			END IF;
		END IF;
		RETURN QUERY SELECT v_status, v_old, ` + leaseColumns + ` FROM leases WHERE id = v_id;
	END $$ LANGUAGE plpgsql`,

	// gcefleet_release_lease ends client's lease (anyone's for client '')
	// and reclaims its machine. It answers with whether this call ended
	// it and the lease's row; with no row if there is no such lease.
	`CREATE FUNCTION gcefleet_release_lease(p_client TEXT, p_id TEXT, p_now BIGINT)
		RETURNS TABLE (o_ended BOOLEAN, ` + pgLeaseTable + `) AS $$
	DECLARE
		v_owner TEXT; v_state TEXT; v_host TEXT; v_backend TEXT; v_body TEXT; v_ended BOOLEAN := FALSE;
	BEGIN
		SELECT client, state, hostname INTO v_owner, v_state, v_host FROM leases WHERE id = p_id FOR UPDATE;
		IF NOT FOUND OR (p_client <> '' AND v_owner <> p_client) THEN
			RETURN;
		END IF;
		IF v_state IN ('PENDING', 'FULFILLED') THEN
			v_ended := TRUE;
			UPDATE leases SET state = 'RELEASED', ended_at = p_now WHERE id = p_id;
			IF v_host IS NOT NULL THEN
				DELETE FROM machines WHERE hostname = v_host AND lease_id = p_id RETURNING backend, body INTO v_backend, v_body;
				IF FOUND THEN
					INSERT INTO events (backend, kind, hostname, lease_id, on_reclaim, at)
						VALUES (v_backend, 'reclaimed', v_host, p_id, COALESCE(v_body::jsonb -> 'policies' ->> 'on_reclaim', ''), p_now);
				END IF;
			END IF;
		END IF;
		RETURN QUERY SELECT v_ended, ` + leaseColumns + ` FROM leases WHERE id = p_id;
	END $$ LANGUAGE plpgsql`,
}

// queuePostgres keeps the queue's tables (see queueSQLite) on
// PostgreSQL, and has adds match by them and requests count against the
// client's cap. A shape's key is the SHA-256 of its sorted "key=value"
// strings as JSON: a key that long sorted whole could exceed what a
// b-tree entry holds.
var queuePostgres = []string{
	`CREATE FUNCTION gcefleet_shape(p_kv TEXT[]) RETURNS TEXT AS $$
		SELECT encode(sha256(convert_to(array_to_json(ARRAY(SELECT d FROM unnest(p_kv) AS d ORDER BY d))::TEXT, 'UTF8')), 'hex')
	$$ LANGUAGE sql IMMUTABLE`,
	`CREATE FUNCTION gcefleet_queue_in() RETURNS trigger AS $$
	DECLARE
		v_shape TEXT := gcefleet_shape(NEW.kv);
	BEGIN
		INSERT INTO queue (shape, created_at, lease_id, deadline) VALUES (v_shape, NEW.created_at, NEW.id, NEW.deadline);
		INSERT INTO queue_shapes (kv, shape, ndims)
			SELECT d, v_shape, cardinality(NEW.kv) FROM unnest(NEW.kv) AS d
			UNION ALL SELECT '', v_shape, 1 WHERE cardinality(NEW.kv) = 0
			ON CONFLICT DO NOTHING;
		RETURN NULL;
	END $$ LANGUAGE plpgsql`,
	`CREATE FUNCTION gcefleet_queue_out() RETURNS trigger AS $$
	DECLARE
		v_shape TEXT := gcefleet_shape(OLD.kv);
	BEGIN
		DELETE FROM queue WHERE shape = v_shape AND created_at = OLD.created_at AND lease_id = OLD.id;
		IF NOT EXISTS (SELECT 1 FROM queue WHERE shape = v_shape) THEN
			DELETE FROM queue_shapes WHERE kv = ANY(array_append(OLD.kv, '')) AND shape = v_shape;
		END IF;
		RETURN NULL;
	END $$ LANGUAGE plpgsql`,
	`CREATE TRIGGER leases_queue_in AFTER INSERT ON leases FOR EACH ROW WHEN (NEW.state = 'PENDING') EXECUTE FUNCTION gcefleet_queue_in()`,
	`CREATE TRIGGER leases_queue_out AFTER UPDATE OF state ON leases FOR EACH ROW WHEN (OLD.state = 'PENDING' AND NEW.state <> 'PENDING') EXECUTE FUNCTION gcefleet_queue_out()`,
	`CREATE TRIGGER leases_queue_gone AFTER DELETE ON leases FOR EACH ROW WHEN (OLD.state = 'PENDING') EXECUTE FUNCTION gcefleet_queue_out()`,
	// The requests queued before this migration.
	`INSERT INTO queue (shape, created_at, lease_id, deadline)
		SELECT gcefleet_shape(l.kv), l.created_at, l.id, l.deadline FROM leases l WHERE l.state = 'PENDING'`,
	`INSERT INTO queue_shapes (kv, shape, ndims)
		SELECT d, gcefleet_shape(l.kv), cardinality(l.kv) FROM leases l, unnest(l.kv) AS d WHERE l.state = 'PENDING'
		UNION ALL SELECT '', gcefleet_shape(l.kv), 1 FROM leases l WHERE l.state = 'PENDING' AND cardinality(l.kv) = 0
		ON CONFLICT DO NOTHING`,

	// As in migration 3, but the oldest request the machine satisfies is
	// found through the queue's tables: only the queue_shapes rows of the
	// machine's own dimensions are read, and the requests of the shapes
	// it satisfies.
	`CREATE OR REPLACE FUNCTION gcefleet_add_machine(p_host TEXT, p_backend TEXT, p_body TEXT, p_now BIGINT,
		p_kv TEXT[]) RETURNS TABLE (o_status TEXT, o_lease TEXT) AS $$
	DECLARE
		v_old TEXT; v_id TEXT; v_shapes TEXT[]; l leases%ROWTYPE;
	BEGIN
		PERFORM pg_advisory_xact_lock_shared(` + matchLock + `);
		SELECT body INTO v_old FROM machines WHERE hostname = p_host;
		IF FOUND THEN
			o_status := CASE WHEN v_old = p_body THEN 'same' ELSE 'conflict' END;
			o_lease := v_old;
			RETURN NEXT;
			RETURN;
		END IF;
		IF EXISTS (SELECT 1 FROM events WHERE hostname = p_host AND kind = 'reclaimed') THEN
			o_status := 'reclaimed';
			RETURN NEXT;
			RETURN;
		END IF;
		INSERT INTO machines (hostname, backend, body, state, added_at, kv) VALUES (p_host, p_backend, p_body, 'AVAILABLE', p_now, p_kv);
		o_status := 'added';
		-- The shapes it satisfies, then their requests, oldest first: a
		-- query on leases ordered by age, or a join, would walk all
		-- pending requests to find them.
		SELECT array_agg(shape) INTO v_shapes FROM (SELECT shape FROM queue_shapes WHERE kv = ANY(array_append(p_kv, ''))
			GROUP BY shape HAVING COUNT(*) = MIN(ndims)) AS fits;
		IF v_shapes IS NOT NULL THEN
			FOR v_id IN SELECT q.lease_id FROM queue q WHERE q.shape = ANY(v_shapes) AND q.deadline > p_now
				ORDER BY q.created_at, q.lease_id LOOP
				SELECT * INTO l FROM leases WHERE id = v_id AND state = 'PENDING' FOR UPDATE SKIP LOCKED;
				EXIT WHEN FOUND;
			END LOOP;
		END IF;
		IF l.id IS NOT NULL THEN
			PERFORM gcefleet_assign(l.id, l.duration_ns, l.expires_at, l.indefinite, p_host, p_backend, p_body, p_now);
			o_lease := l.id;
		END IF;
		RETURN NEXT;
	END $$ LANGUAGE plpgsql`,

	// As in migration 3, with p_cap: a request that would queue beyond
	// its client's p_cap pending requests is refused (o_status full), and
	// nothing written. (The other, without p_cap, stays for replicas not
	// yet upgraded.)
	`CREATE FUNCTION gcefleet_request_lease(p_id TEXT, p_client TEXT, p_request_id TEXT, p_body TEXT,
		p_now BIGINT, p_deadline BIGINT, p_dur BIGINT, p_exp BIGINT, p_indef BOOLEAN, p_kv TEXT[], p_cap INTEGER)
		RETURNS TABLE (o_status TEXT, o_old TEXT, ` + pgLeaseTable + `) AS $$
	DECLARE
		v_id TEXT; v_old TEXT; v_status TEXT := 'new'; v_host TEXT; v_backend TEXT; v_body TEXT; v_pending INTEGER;
	BEGIN
		SELECT id, body INTO v_id, v_old FROM leases WHERE client = p_client AND request_id = p_request_id;
		IF FOUND THEN
			v_status := CASE WHEN v_old = p_body THEN 'repeat' ELSE 'reuse' END;
		ELSE
			v_id := p_id;
			SELECT hostname, backend, body INTO v_host, v_backend, v_body FROM machines
				WHERE state = 'AVAILABLE' AND kv @> p_kv
				ORDER BY added_at, hostname LIMIT 1 FOR UPDATE SKIP LOCKED;
			IF FOUND THEN
				INSERT INTO leases (id, client, request_id, body, state, hostname, machine, created_at, deadline,
					duration_ns, expires_at, indefinite, fulfilled_at, kv)
					VALUES (p_id, p_client, p_request_id, p_body, 'FULFILLED', v_host, v_body, p_now, p_deadline,
					p_dur, CASE WHEN p_dur > 0 THEN p_now + p_dur WHEN NOT p_indef THEN p_exp ELSE 0 END, p_indef, p_now, p_kv);
				UPDATE machines SET state = 'LEASED', lease_id = p_id WHERE hostname = v_host;
				INSERT INTO events (backend, kind, hostname, lease_id, on_reclaim, at)
					VALUES (v_backend, 'leased', v_host, p_id, '', p_now);
			ELSE
				SELECT COUNT(*) INTO v_pending FROM (SELECT 1 FROM leases WHERE client = p_client AND state = 'PENDING' LIMIT p_cap) AS mine;
				IF v_pending >= p_cap THEN
					RETURN QUERY SELECT 'full'::TEXT, NULL::TEXT, ''::TEXT, ''::TEXT, ''::TEXT, ''::TEXT, ''::TEXT, ''::TEXT, ''::TEXT,
						0::BIGINT, 0::BIGINT, 0::BIGINT, 0::BIGINT, 0::BIGINT;
					RETURN;
				END IF;
				INSERT INTO leases (id, client, request_id, body, state, created_at, deadline, duration_ns, expires_at, indefinite, kv)
					VALUES (p_id, p_client, p_request_id, p_body, 'PENDING', p_now, p_deadline, p_dur, p_exp, p_indef, p_kv);
				PERFORM pg_advisory_xact_lock(` + matchLock + `);
				PERFORM gcefleet_find(p_id, p_dur, p_exp, p_indef, p_kv, p_now);
			END IF;
		END IF;
		RETURN QUERY SELECT v_status, v_old, ` + leaseColumns + ` FROM leases WHERE id = v_id;
	END $$ LANGUAGE plpgsql`,
	`ALTER FUNCTION gcefleet_add_machine SET enable_seqscan = off`,
	`ALTER FUNCTION gcefleet_add_machine SET enable_bitmapscan = off`,
	`ALTER FUNCTION gcefleet_request_lease(TEXT, TEXT, TEXT, TEXT, BIGINT, BIGINT, BIGINT, BIGINT, BOOLEAN, TEXT[], INTEGER) SET enable_seqscan = off`,
	`ALTER FUNCTION gcefleet_request_lease(TEXT, TEXT, TEXT, TEXT, BIGINT, BIGINT, BIGINT, BIGINT, BOOLEAN, TEXT[], INTEGER) SET enable_bitmapscan = off`,
}

// pgLeaseTable declares the columns of leaseColumns as a function's result.
const pgLeaseTable = `o_id TEXT, o_client TEXT, o_request_id TEXT, o_body TEXT, o_state TEXT, o_hostname TEXT, o_machine TEXT,
	o_created_at BIGINT, o_deadline BIGINT, o_fulfilled_at BIGINT, o_expires_at BIGINT, o_ended_at BIGINT`

// withPrefix scans columns before a lease's.
type withPrefix struct {
	row    pgx.Row
	prefix []any
}

func (w withPrefix) Scan(dest ...any) error { return w.row.Scan(append(w.prefix, dest...)...) }

// addMachine is AddMachine on PostgreSQL.
func (d *postgresDB) addMachine(ctx context.Context, m Machine, body string, now time.Time) (Machine, error) {
	var status string
	var detail sql.NullString
	err := d.call(ctx, func(row pgx.Row) error { return row.Scan(&status, &detail) },
		"SELECT o_status, o_lease FROM gcefleet_add_machine($1, $2, $3, $4, $5)",
		m.Hostname, m.Backend, body, nanos(now), kv(m.Dimensions))
	switch {
	case err != nil:
		return Machine{}, err
	case status == "same":
		return Machine{}, errSame
	case status == "conflict":
		return Machine{}, fmt.Errorf("%w: %s is cataloged already with another body: %s", ErrConflict, m.Hostname, detail.String)
	case status == "reclaimed":
		return Machine{}, fmt.Errorf("%w: %s was leased and reclaimed; a machine is cataloged once, its backend makes a fresh one", ErrReclaimed, m.Hostname)
	}
	m.Dimensions, m.State, m.Added = m.Dimensions.normalize(), Available, fromNanos(nanos(now))
	if detail.Valid {
		m.State, m.LeaseID = Leased, detail.String
	}
	return m, nil
}

// requestLease is RequestLease on PostgreSQL.
func (d *postgresDB) requestLease(ctx context.Context, client, body string, r LeaseRequest, t term, max int, now time.Time) (Lease, bool, error) {
	id := newID(now)
	var status string
	var old sql.NullString
	var row leaseRow
	err := d.call(ctx, func(r pgx.Row) (err error) {
		row, err = scanLeaseRow(withPrefix{r, []any{&status, &old}})
		return err
	}, "SELECT * FROM gcefleet_request_lease($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
		id, client, r.RequestID, body, nanos(now), nanos(r.Deadline), t.durNs, t.expNs, t.indefinite, kv(r.Dimensions), max)
	switch {
	case err != nil:
		return Lease{}, false, err
	case status == "full":
		return Lease{}, false, queueFull(client, max)
	case status == "reuse":
		return Lease{}, false, fmt.Errorf("%w: request id %q was used for %s", ErrRequestIDReuse, r.RequestID, old.String)
	}
	l, err := row.decode()
	return l, status == "new", err
}

// releaseLease is ReleaseLease on PostgreSQL.
func (d *postgresDB) releaseLease(ctx context.Context, client, id string, now time.Time) (Lease, bool, error) {
	var ended bool
	var l Lease
	err := d.call(ctx, func(row pgx.Row) (err error) {
		l, err = scanLease(withPrefix{row, []any{&ended}})
		return err
	}, "SELECT * FROM gcefleet_release_lease($1, $2, $3)", client, id, nanos(now))
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, false, fmt.Errorf("lease %s: %w", id, ErrNotFound)
	}
	return l, ended, err
}

// call runs query, a call of one of the functions above, and scans its
// row. Calls share transactions: the committer sends whatever calls are
// waiting to the database at once, in one implicit transaction, because
// each commit, round trip and wake-up of a database process cost more
// than a call's own work.
func (d *postgresDB) call(ctx context.Context, scan func(pgx.Row) error, query string, args ...any) error {
	return d.c.submit(ctx, pgCall{query: query, args: args, scan: scan})
}

// pgCall is a caller's call of one of the functions above: query, with
// args, whose row scan reads.
type pgCall struct {
	query string
	args  []any
	scan  func(pgx.Row) error
}

// pgWork is a caller's call, waiting for the committer.
type pgWork = work[pgCall]

// batchTimeout bounds a batch, so that a database that stops answering
// fails its callers instead of holding them.
const batchTimeout = time.Minute

// runPgBatch runs the calls of batch together; if one fails on the
// server, the transaction they shared is rolled back, and each runs again
// alone so that the failure stays its own.
func (d *postgresDB) runPgBatch(batch []*pgWork) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	errs, onServer := d.pipeline(ctx, batch)
	if onServer && len(batch) > 1 {
		for i := range batch {
			errs[i] = d.retry(ctx, func() error {
				err, _ := d.pipeline(ctx, batch[i:i+1])
				return err[0]
			})
		}
	}
	for i, w := range batch {
		w.done <- errs[i]
	}
}

// pipeline sends the calls of batch in one round trip and one implicit
// transaction. If the transaction did not commit, every call has an
// error; onServer says the server refused one (it then rolled back all).
func (d *postgresDB) pipeline(ctx context.Context, batch []*pgWork) (errs []error, onServer bool) {
	errs = make([]error, len(batch))
	if d.conn == nil {
		c, err := d.db.Conn(ctx)
		if err != nil {
			for i := range errs {
				errs[i] = err
			}
			return errs, false
		}
		d.conn = c
	}
	var failed error
	err := d.conn.Raw(func(dc any) error {
		conn := dc.(*stdlib.Conn).Conn()
		var b pgx.Batch
		b.Queue("SELECT pg_advisory_xact_lock(" + eventsLock + ")")
		for _, w := range batch {
			b.Queue(w.do.query, w.do.args...)
		}
		br := conn.SendBatch(ctx, &b)
		if _, err := br.Exec(); err != nil {
			br.Close()
			return err
		}
		for i, w := range batch {
			errs[i] = w.do.scan(br.QueryRow())
			var pe *pgconn.PgError
			if failed == nil && errors.As(errs[i], &pe) {
				failed, onServer = errs[i], true
			}
		}
		return br.Close()
	})
	if err != nil && failed == nil {
		failed = err
		var pe *pgconn.PgError
		onServer = errors.As(err, &pe)
	}
	if failed == nil {
		return errs, false
	}
	if !onServer {
		// The connection is broken, or in a state unknown: a new one
		// next time.
		d.conn.Close()
		d.conn = nil
	}
	for i := range errs {
		if errs[i] == nil || errors.Is(errs[i], pgx.ErrNoRows) {
			errs[i] = failed
		}
	}
	return errs, onServer
}

// changesChannel is the channel that PostgreSQL notifies, on commit, of
// every change of a lease (the payload "lease ID") and of new events of
// a backend ("events BACKEND"); before migration 10, of either with an
// empty payload.
const changesChannel = "gcefleet_changes"

// listen is Listen: a connection of its own LISTENs for what the
// triggers of migration 10 notify.
func (d *postgresDB) listen(ctx context.Context, changed func(Change)) error {
	conn, err := pgx.Connect(ctx, d.url)
	if err != nil {
		return fmt.Errorf("store: connecting to listen: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+changesChannel); err != nil {
		return fmt.Errorf("store: listen: %w", err)
	}
	changed(Change{})
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("store: waiting for changes: %w", err)
		}
		var c Change
		if id, ok := strings.CutPrefix(n.Payload, "lease "); ok {
			c.Lease = id
		} else if b, ok := strings.CutPrefix(n.Payload, "events "); ok {
			c.Events, c.Backend = true, b
		}
		changed(c)
	}
}

// changesPostgres (migration 10) says in each notification what changed:
// which lease, or that there are new events, so that a replica wakes only
// the long polls that wait for it.
var changesPostgres = []string{
	`CREATE FUNCTION gcefleet_lease_changed() RETURNS trigger AS $$
	BEGIN
		PERFORM pg_notify('` + changesChannel + `', 'lease ' || NEW.id);
		RETURN NULL;
	END $$ LANGUAGE plpgsql`,
	`CREATE FUNCTION gcefleet_events_changed() RETURNS trigger AS $$
	BEGIN
		PERFORM pg_notify('` + changesChannel + `', 'events ' || NEW.backend);
		RETURN NULL;
	END $$ LANGUAGE plpgsql`,
	`DROP TRIGGER leases_changed ON leases`,
	`CREATE TRIGGER leases_changed AFTER UPDATE ON leases FOR EACH ROW EXECUTE FUNCTION gcefleet_lease_changed()`,
	`DROP TRIGGER events_changed ON events`,
	`CREATE TRIGGER events_changed AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION gcefleet_events_changed()`,
}

// retry runs a PostgreSQL transaction f again when it failed on a
// serialization failure or deadlock, or on a unique key that a concurrent
// transaction took first (run again, f sees that key as taken).
func (d *postgresDB) retry(ctx context.Context, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		var pe *pgconn.PgError
		if err != nil && errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01" || pe.Code == "23505") && attempt < 10 && ctx.Err() == nil {
			continue
		}
		return err
	}
}
