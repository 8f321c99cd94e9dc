package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// sqliteDB is the engine of a SQLite database: one connection, used by
// one operation at a time, with its statements prepared once (parsing
// costs SQLite more than running these), and every transaction made by
// the committer.
type sqliteDB struct {
	ckpt *sql.DB // a database in a file: the checkpointer's connection

	mu    sync.Mutex
	conn  *sql.Conn
	stmts map[string]*sql.Stmt

	c *committer[func(*sql.Tx) error]
}

// sqliteWork is a caller's transaction on SQLite: f, in a savepoint.
type sqliteWork = work[func(*sql.Tx) error]

// openSQLite opens the database file at path, or a private in-memory
// database for ":memory:".
func openSQLite(path string) (*sql.DB, error) {
	if err := private(path); err != nil {
		return nil, err
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_txlock=immediate&_pragma=temp_store(memory)"
	if path != ":memory:" {
		// WAL: readers do not block the writer; synchronous NORMAL is
		// durable against a crash of the process (not of the OS).
		dsn += "&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=cache_size(-32768)&_pragma=wal_autocheckpoint(0)"
	}
	db, err := sql.Open("sqlite", dsn)
	if err == nil {
		// One connection: SQLite lets one write at a time anyway, and
		// an in-memory database exists per connection.
		db.SetMaxOpenConns(1)
	}
	return db, err
}

// private makes the database file at path, and its -wal and -shm files,
// readable by their owner only, creating the file so if it is not there:
// it holds the provider's claim key and the fleet CA's key, with which
// a reader could forge claims and machine certificates. (SQLite gives the
// -wal and -shm files it creates the database file's permissions.)
func private(path string) error {
	if path == ":memory:" || strings.HasPrefix(path, "file:") || strings.Contains(path, "?") {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, 0o600); err != nil {
				return fmt.Errorf("%s is readable by others, and holds the provider's and the fleet's keys: %w (chmod 600 it)", p, err)
			}
		}
	}
	return nil
}

// newSQLite starts the engine of db, opened by openSQLite(path) and
// migrated.
func newSQLite(ctx context.Context, db *sql.DB, path string) (*sqliteDB, error) {
	d := &sqliteDB{stmts: map[string]*sql.Stmt{}}
	var err error
	if path != ":memory:" {
		if d.ckpt, err = sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)"); err != nil {
			return nil, err
		}
	}
	if d.conn, err = db.Conn(ctx); err != nil {
		if d.ckpt != nil {
			d.ckpt.Close()
		}
		return nil, err
	}
	d.c = newCommitter(d.runBatch)
	if d.ckpt != nil {
		d.c.running.Go(d.checkpoint)
	}
	return d, nil
}

func (d *sqliteDB) name() string { return "sqlite" }

func (d *sqliteDB) close() {
	d.c.close()
	if d.ckpt != nil {
		d.ckpt.Close()
	}
	d.mu.Lock()
	for _, st := range d.stmts {
		st.Close()
	}
	d.conn.Close()
	d.mu.Unlock()
}

// exec, query and queryRow run a statement on the one connection,
// prepared once (tx is nil: the connection is in a transaction of its
// own making).
//
// A statement is not cancelled with its caller's context: the
// transaction it runs in holds other callers' work too (see runBatch),
// and SQLite answers an interrupted write by rolling back the whole
// transaction. Every statement here takes microseconds.
func (d *sqliteDB) exec(_ context.Context, _ *sql.Tx, query string, args ...any) (sql.Result, error) {
	ctx := context.Background()
	if st := d.prepared(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return d.conn.ExecContext(ctx, query, args...)
}

func (d *sqliteDB) query(_ context.Context, _ *sql.Tx, query string, args ...any) (*sql.Rows, error) {
	ctx := context.Background()
	if st := d.prepared(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return d.conn.QueryContext(ctx, query, args...)
}

func (d *sqliteDB) queryRow(_ context.Context, _ *sql.Tx, query string, args ...any) *sql.Row {
	ctx := context.Background()
	if st := d.prepared(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return d.conn.QueryRowContext(ctx, query, args...)
}

// read runs f through the committer, whose one connection serves one
// operation at a time (read connections of their own were measured
// slower: they make the writer share its WAL index).
func (d *sqliteDB) read(ctx context.Context, f func(*sql.Tx) error) error {
	return d.tx(ctx, f)
}

// forUpdate and forShare lock nothing: SQLite transactions hold the
// whole database.
func (d *sqliteDB) forUpdate() string { return "" }
func (d *sqliteDB) forShare() string  { return "" }

// onReclaim is the SQL for a machine's reclamation policy, read from its
// body in the database (no decoding of the whole body for one field).
func (d *sqliteDB) onReclaim() string {
	return "COALESCE(body ->> '$.policies.on_reclaim', '')"
}

// lockEvents takes no lock: SQLite has one writer.
func (d *sqliteDB) lockEvents(context.Context, *sql.Tx) error { return nil }

// maintain does nothing: SQLite's planner does better here on its rules
// than on sqlite_stat1 (measured: a quarter of the throughput).
func (d *sqliteDB) maintain(context.Context) error { return nil }

// listen has nothing to hear: one process uses a SQLite database.
func (d *sqliteDB) listen(context.Context, func(Change)) error { return nil }

// prepared returns query prepared on SQLite's connection. d.mu is held.
func (d *sqliteDB) prepared(ctx context.Context, query string) *sql.Stmt {
	if st, ok := d.stmts[query]; ok {
		return st
	}
	st, err := d.conn.PrepareContext(ctx, query)
	if err != nil {
		return nil // the query runs unprepared and reports its error
	}
	d.stmts[query] = st
	return st
}

// tx runs f in a transaction on SQLite's one connection, through
// the committer: f may share its transaction with other callers' (each
// in a savepoint of its own), because committing (writing the WAL) costs
// more than all of the statements of a lease request, and a batch writes
// each page it touches once.
func (d *sqliteDB) tx(ctx context.Context, f func(*sql.Tx) error) error {
	return d.c.submit(ctx, f)
}

// checkpoint copies the WAL into the database file every so often, on a
// connection of its own: the writer does not wait for it (as it would
// for SQLite's automatic checkpoints, a stall of tens of milliseconds
// for every caller in the batch).
func (d *sqliteDB) checkpoint() {
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-d.c.closed:
			return
		case <-t.C:
			d.ckpt.Exec("PRAGMA wal_checkpoint(PASSIVE)")
		}
	}
}

const checkpointEvery = 200 * time.Millisecond

// runBatch runs each work in a savepoint of one transaction: a work that
// fails is rolled back alone; if the commit fails, every work fails.
// (Measured: running a batch without savepoints, and again with them only
// when a work fails, saves nothing measurable.)
func (d *sqliteDB) runBatch(batch []*sqliteWork) {
	ctx := context.Background()
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.exec(ctx, nil, "BEGIN IMMEDIATE"); err != nil {
		for _, w := range batch {
			w.done <- fmt.Errorf("store: begin: %w", err)
		}
		return
	}
	errs := make([]error, len(batch))
	for i, w := range batch {
		if _, err := d.exec(ctx, nil, "SAVEPOINT work"); err != nil {
			d.abort(batch, err)
			return
		}
		errs[i] = w.do(nil)
		if errs[i] != nil {
			if _, err := d.exec(ctx, nil, "ROLLBACK TO work"); err != nil {
				d.abort(batch, err)
				return
			}
		}
		if _, err := d.exec(ctx, nil, "RELEASE work"); err != nil {
			d.abort(batch, err)
			return
		}
	}
	if _, err := d.exec(ctx, nil, "COMMIT"); err != nil {
		d.abort(batch, err)
		return
	}
	for i, w := range batch {
		w.done <- errs[i]
	}
}

// abort rolls back a batch that cannot commit and fails all of its work.
func (d *sqliteDB) abort(batch []*sqliteWork, err error) {
	d.exec(context.Background(), nil, "ROLLBACK")
	for _, w := range batch {
		w.done <- fmt.Errorf("store: transaction: %w", err)
	}
}

// kvJSON is kv as SQLite keeps it.
func kvJSON(kv []string) string {
	b, _ := json.Marshal(kv)
	return string(b)
}

// addMachine is AddMachine on SQLite (gcefleet_add_machine on
// PostgreSQL).
func (d *sqliteDB) addMachine(ctx context.Context, m Machine, body string, now time.Time) (Machine, error) {
	dims := kvJSON(kv(m.Dimensions)) // before the transaction: every caller waits for it
	err := d.tx(ctx, func(*sql.Tx) error {
		var old string
		err := d.queryRow(ctx, nil, "SELECT body FROM machines WHERE hostname = ?", m.Hostname).Scan(&old)
		switch {
		case err == nil && old == body:
			return errSame
		case err == nil:
			return fmt.Errorf("%w: %s is cataloged already with another body: %s", ErrConflict, m.Hostname, old)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		var reclaimed int
		if err := d.queryRow(ctx, nil, "SELECT COUNT(*) FROM events WHERE kind = 'reclaimed' AND hostname = ?", m.Hostname).Scan(&reclaimed); err != nil {
			return err
		}
		if reclaimed > 0 {
			return fmt.Errorf("%w: %s was leased and reclaimed; a machine is cataloged once, its backend makes a fresh one", ErrReclaimed, m.Hostname)
		}
		if _, err := d.exec(ctx, nil, "INSERT INTO machines (hostname, backend, body, state, added_at, kv) VALUES (?, ?, ?, ?, ?, ?)",
			m.Hostname, m.Backend, body, Available, nanos(now), dims); err != nil {
			return err
		}
		// Answer with what was written: no statement to read it back.
		m.State, m.Added = Available, fromNanos(nanos(now))
		if m.LeaseID, err = d.offerMachine(ctx, m.Hostname, m.Backend, body, dims, now); m.LeaseID != "" {
			m.State = Leased
		}
		return err
	})
	return m, err
}

// offerMachine gives an available machine, whose dimensions are dims
// (kvJSON), to the oldest pending request whose every dimension it has,
// if any, and returns that lease's id.
func (d *sqliteDB) offerMachine(ctx context.Context, host, backend, body, dims string, now time.Time) (string, error) {
	var id string
	var t term
	// Only the queue_shapes rows of the machine's own dimensions are
	// read, and the requests of the shapes it satisfies.
	err := d.queryRow(ctx, nil, `SELECT l.id, l.duration_ns, l.expires_at, l.indefinite FROM leases l WHERE l.id = (
		SELECT q.lease_id FROM queue q WHERE q.shape IN (
			SELECT shape FROM queue_shapes WHERE kv IN (SELECT value FROM json_each(?) UNION ALL SELECT '') GROUP BY shape HAVING COUNT(*) = MIN(ndims))
		AND q.deadline > ? ORDER BY q.created_at, q.lease_id LIMIT 1)
		AND l.state = 'PENDING'`, dims, nanos(now)).Scan(&id, &t.durNs, &t.expNs, &t.indefinite)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return id, d.assign(ctx, id, t, host, backend, body, now)
}

// assign gives machine host to pending lease id (gcefleet_assign on
// PostgreSQL).
func (d *sqliteDB) assign(ctx context.Context, id string, t term, host, backend, body string, now time.Time) error {
	if _, err := d.exec(ctx, nil, "UPDATE machines SET state = ?, lease_id = ? WHERE hostname = ?", Leased, id, host); err != nil {
		return err
	}
	if _, err := d.exec(ctx, nil, "UPDATE leases SET state = ?, hostname = ?, machine = ?, fulfilled_at = ?, expires_at = ? WHERE id = ?",
		Fulfilled, host, body, nanos(now), t.expiry(now), id); err != nil {
		return err
	}
	return event(ctx, d, nil, backend, "leased", host, id, "", now)
}

// requestLease is RequestLease on SQLite (gcefleet_request_lease on
// PostgreSQL).
func (d *sqliteDB) requestLease(ctx context.Context, client, body string, r LeaseRequest, t term, max int, now time.Time) (Lease, bool, error) {
	var row leaseRow
	repeat := false
	// Before the transaction: every caller waits for it.
	want := kv(r.Dimensions)
	wantJSON := kvJSON(want)
	err := d.tx(ctx, func(*sql.Tx) error {
		var id, old string
		err := d.queryRow(ctx, nil, "SELECT id, body FROM leases WHERE client = ? AND request_id = ?", client, r.RequestID).Scan(&id, &old)
		switch {
		case err == nil && old == body:
			repeat = true
			row, err = scanLeaseRow(d.queryRow(ctx, nil, "SELECT "+leaseColumns+" FROM leases WHERE id = ?", id))
			return err
		case err == nil:
			return fmt.Errorf("%w: request id %q was used for %s", ErrRequestIDReuse, r.RequestID, old)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		repeat = false
		id = newID(now)
		host, backend, mbody, err := d.findMachine(ctx, want)
		if err != nil {
			return err
		}
		if host != "" {
			// Fulfilled at once: the lease is written once, as it is.
			if _, err := d.exec(ctx, nil, "UPDATE machines SET state = ?, lease_id = ? WHERE hostname = ?", Leased, id, host); err != nil {
				return err
			}
			// Answer with what is written: no reading it back.
			c := leaseCols{id: id, client: client, requestID: r.RequestID, body: body, state: Fulfilled, host: host, machine: mbody,
				created: nanos(now), deadline: nanos(r.Deadline), fulfilled: nanos(now), expires: t.expiry(now)}
			if _, err := d.exec(ctx, nil, `INSERT INTO leases (id, client, request_id, body, state, hostname, machine, created_at, deadline,
				duration_ns, expires_at, indefinite, fulfilled_at, kv) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				c.id, c.client, c.requestID, c.body, c.state, c.host, c.machine, c.created, c.deadline, t.durNs, c.expires, t.indefinite, c.fulfilled, wantJSON); err != nil {
				return err
			}
			row = c.row()
			return event(ctx, d, nil, backend, "leased", host, id, "", now)
		}
		// At most max are counted: the count costs no more than that.
		var pending int
		if err := d.queryRow(ctx, nil, "SELECT COUNT(*) FROM (SELECT 1 FROM leases WHERE client = ? AND state = 'PENDING' LIMIT ?)", client, max).Scan(&pending); err != nil {
			return err
		}
		if pending >= max {
			return queueFull(client, max)
		}
		c := leaseCols{id: id, client: client, requestID: r.RequestID, body: body, state: Pending, created: nanos(now), deadline: nanos(r.Deadline), expires: t.expNs}
		if _, err := d.exec(ctx, nil, `INSERT INTO leases (id, client, request_id, body, state, created_at, deadline, duration_ns, expires_at, indefinite, kv)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			c.id, c.client, c.requestID, c.body, c.state, c.created, c.deadline, t.durNs, c.expires, t.indefinite, wantJSON); err != nil {
			return err
		}
		row = c.row()
		return nil
	})
	if err != nil {
		return Lease{}, false, err
	}
	l, err := row.decode()
	return l, !repeat, err
}

// findMachine returns the first available machine (in the order they
// were added) that has every dimension in want (kv), or host "" if none
// does.
// No older request wants an available machine (each was offered every
// machine as it arrived), so the first match is a new request's.
func (d *sqliteDB) findMachine(ctx context.Context, want []string) (host, backend, body string, err error) {
	// The state is a literal: the index of available machines holds
	// only those, and SQLite uses it only when the query says so.
	// One term for all of want, not one a value: SQLite refuses an
	// expression more than 1,000 deep. The machine has all of want when
	// as many of its own values are among want (each list's values are
	// distinct): the IN's list is built once for the query, not once a
	// machine.
	q := `SELECT m.hostname, m.backend, m.body FROM machines m WHERE m.state = 'AVAILABLE'
		AND (SELECT COUNT(*) FROM json_each(m.kv) h WHERE h.value IN (SELECT value FROM json_each(?1))) = json_array_length(?1)`
	err = d.queryRow(ctx, nil, q+" ORDER BY m.added_at, m.hostname LIMIT 1", kvJSON(want)).Scan(&host, &backend, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", "", nil
	}
	return host, backend, body, err
}

// releaseLease is ReleaseLease on SQLite (gcefleet_release_lease on
// PostgreSQL).
func (d *sqliteDB) releaseLease(ctx context.Context, client, id string, now time.Time) (Lease, bool, error) {
	var row leaseRow
	ended := false
	err := d.tx(ctx, func(*sql.Tx) error {
		var err error
		// Most releases end an active lease of the caller's: one statement.
		row, err = scanLeaseRow(d.queryRow(ctx, nil, "UPDATE leases SET state = ?, ended_at = ? WHERE id = ? AND (client = ? OR ? = '') AND state IN (?, ?) RETURNING "+leaseColumns,
			Released, nanos(now), id, client, client, Pending, Fulfilled))
		if err == nil {
			ended = true
			return reclaim(ctx, d, nil, id, row.l.Hostname, now)
		}
		ended = false
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		// Someone else's, unknown, or ended already.
		row, err = scanLeaseRow(d.queryRow(ctx, nil, "SELECT "+leaseColumns+" FROM leases WHERE id = ?", id))
		if errors.Is(err, sql.ErrNoRows) || err == nil && client != "" && row.l.Client != client {
			return fmt.Errorf("lease %s: %w", id, ErrNotFound)
		}
		return err
	})
	if err != nil {
		return Lease{}, false, err
	}
	l, err := row.decode()
	return l, ended, err
}
