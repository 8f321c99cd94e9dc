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
func (d *postgresDB) lockRow() string   { return " FOR UPDATE" }

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
	m.Dimensions, m.State, m.Added = m.Dimensions.Normalize(), Available, fromNanos(nanos(now))
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
// every change of a lease (the payload "lease ID"), of new events of a
// backend ("events BACKEND") and of the queue ("demand", since migration
// 11); before migration 10, of either with an empty payload.
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
		} else if n.Payload == "demand" {
			c.Demand = true
		}
		changed(c)
	}
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

func (d *postgresDB) shape(col string) string { return "gcefleet_shape(" + col + ")" }

func (d *postgresDB) hasAll(col string) string { return col + " @> ?::TEXT[]" }

func (d *postgresDB) kvArg(kv []string) any { return kv }
