// Package store keeps the Machine Provider's catalog, leases and event feed
// in SQLite (the embedded default) or PostgreSQL (for several replicas of
// the service). Every operation is one transaction: a machine is never
// leased twice, and a crash at any point loses no acknowledged change.
//
// This file holds what both databases share; sqlite.go and postgres.go
// each implement engine, what the Store needs of its database.
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // the "sqlite" database/sql driver
)

// Store is an open database.
type Store struct {
	db       *sql.DB
	postgres bool   // for migrate, which runs before engine exists
	engine   engine // *sqliteDB or *postgresDB

	// Now is the clock; tests may replace it before use.
	Now func() time.Time
	// MaxPending is how many pending requests one client may have
	// (DefaultMaxPending if 0); a request beyond it that finds no machine
	// fails with ErrQueueFull. Set it before use.
	MaxPending int
}

// engine is what the Store needs of a database: statements and
// transactions in its own way, and the hot paths (adding a machine,
// requesting and releasing a lease), which each database does in the way
// measured fastest on it. Everything else is written once, in this file,
// on top of these.
type engine interface {
	// exec, query and queryRow run a statement, written with ?
	// placeholders, in tx (nil outside a transaction, and always on
	// SQLite, whose one connection is in a transaction of its own
	// making).
	exec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error)
	query(ctx context.Context, tx *sql.Tx, query string, args ...any) (*sql.Rows, error)
	queryRow(ctx context.Context, tx *sql.Tx, query string, args ...any) *sql.Row
	// tx runs f in a transaction; read runs f, which only reads.
	tx(ctx context.Context, f func(*sql.Tx) error) error
	read(ctx context.Context, f func(*sql.Tx) error) error
	// forUpdate and forShare end a SELECT that locks its rows (on
	// PostgreSQL forUpdate skips rows another holds, as a queue's
	// consumer does); lockRow ends one that waits for the row instead,
	// for a change that must see it as it ends up. onReclaim is a
	// machine's reclamation policy read from its body column.
	forUpdate() string
	lockRow() string
	forShare() string
	onReclaim() string
	// lockEvents, first in a transaction that writes events, keeps
	// events committing in the order of their ids.
	lockEvents(ctx context.Context, tx *sql.Tx) error

	// addMachine catalogs m, whose body is body, or fails with errSame
	// if it is cataloged already with that body.
	addMachine(ctx context.Context, m Machine, body string, now time.Time) (Machine, error)
	// requestLease records client's request r, its body body and term t,
	// refusing it if it would queue beyond max pending requests.
	requestLease(ctx context.Context, client, body string, r LeaseRequest, t term, max int, now time.Time) (Lease, bool, error)
	// releaseLease ends client's lease id (anyone's for client "").
	releaseLease(ctx context.Context, client, id string, now time.Time) (Lease, bool, error)

	// maintain is Maintain, listen is Listen.
	maintain(ctx context.Context) error
	listen(ctx context.Context, changed func(Change)) error
	// shape is the SQL of the queue's key of the "key=value" strings in
	// column col (see queueSQLite); hasAll is the SQL condition that
	// column col holds every "key=value" of the one argument, made by
	// kvArg.
	shape(col string) string
	hasAll(col string) string
	kvArg(kv []string) any
	// name is Dialect.
	name() string
	// close stops the engine's goroutines and connections, not the pool.
	close()
}

// DefaultMaxPending is how many pending requests a client may have by
// default: enough for any one job's burst, few enough that one client
// cannot fill the queue for all.
const DefaultMaxPending = 1000

// maxPending is MaxPending or its default.
func (s *Store) maxPending() int {
	if s.MaxPending > 0 {
		return s.MaxPending
	}
	return DefaultMaxPending
}

// queueFull is the error for a client whose queue is full.
func queueFull(client string, max int) error {
	return fmt.Errorf("%w: client %s has %d pending lease requests, the most it may have; wait for some to be fulfilled or release them, or raise max_pending_per_client in the provider's configuration", ErrQueueFull, client, max)
}

// Open opens the database at url and applies migrations: a PostgreSQL URL
// (postgres://...), a SQLite file (sqlite:PATH or a plain path), or
// ":memory:" for a private in-memory SQLite database.
func Open(ctx context.Context, url string) (*Store, error) {
	return open(ctx, url, true)
}

// OpenCurrent opens the database at url as Open does, but does not
// migrate it: a database whose schema is older than this gcefleet's is an
// error that says so. It is for looking without changing anything, as
// gcefleet plan does.
func OpenCurrent(ctx context.Context, url string) (*Store, error) {
	return open(ctx, url, false)
}

func open(ctx context.Context, url string, migrate bool) (*Store, error) {
	s := &Store{Now: time.Now}
	var err error
	path := strings.TrimPrefix(url, "sqlite:")
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		s.postgres = true
		s.db, err = openPostgres(url)
	case path == "":
		return nil, errors.New("store: empty database path")
	default:
		s.db, err = openSQLite(path)
	}
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", redact(url), err)
	}
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("store: connecting to %s: %w", redact(url), err)
	}
	check := s.migrate
	if !migrate {
		check = s.checkVersion
	}
	if err := check(ctx, migrations); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("%w (database %s)", err, redact(url))
	}
	if s.postgres {
		s.engine = newPostgres(s.db, url)
		return s, nil
	}
	if s.engine, err = newSQLite(ctx, s.db, path); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("store: opening %s: %w", redact(url), err)
	}
	return s, nil
}

// redact hides a password in a URL for messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.Redacted()
}

// Close closes the database.
func (s *Store) Close() error {
	s.engine.close()
	return s.db.Close()
}

// Dialect returns "sqlite" or "postgres".
func (s *Store) Dialect() string {
	return s.engine.name()
}

// newID returns a lease id: the time, then random bits. Ids made one
// after another sort together, so a batch of new leases writes one leaf
// page of each index instead of one page per lease.
func newID(now time.Time) string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	rand.Read(b[8:])
	return hex.EncodeToString(b[:])
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// machineBody is what makes two catalog entries the same.
func machineBody(m Machine) string {
	b, _ := json.Marshal(struct {
		Backend    string     `json:"backend"`
		Dimensions Dimensions `json:"dimensions"`
		Policies   Policies   `json:"policies"`
		Connection Connection `json:"connection"`
	}{m.Backend, m.Dimensions.Normalize(), m.Policies, m.Connection})
	return string(b)
}

// kv flattens dimensions into "key=value" strings (keys hold no "="):
// how both databases keep them, PostgreSQL as an array, SQLite as a JSON
// array, so that a match looks at one row.
func kv(d Dimensions) []string {
	out := []string{} // not nil: that would be NULL, not an empty array
	for k, vs := range d {
		for _, v := range vs {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// AddMachine catalogs m. Adding a hostname again with the same body does
// nothing; with another body it fails with ErrConflict. A new machine goes
// at once to the oldest pending request it satisfies.
func (s *Store) AddMachine(ctx context.Context, m Machine) (Machine, error) {
	if m.Policies.OnReclaim == "" {
		m.Policies.OnReclaim = "DELETE"
	}
	m.Dimensions = m.Dimensions.Normalize()
	body := machineBody(m)
	now := s.Now()
	out, err := s.engine.addMachine(ctx, m, body, now)
	if errors.Is(err, errSame) {
		out, err = s.Machine(ctx, m.Hostname)
	}
	if err != nil {
		return Machine{}, fmt.Errorf("store: adding machine %s: %w", m.Hostname, err)
	}
	return out, nil
}

// AddMachines catalogs each of ms as AddMachine does, each on its own:
// one that fails does not stop the others. The lot share about one
// transaction (the committer batches them) instead of costing one each.
func (s *Store) AddMachines(ctx context.Context, ms []Machine) ([]Machine, []error) {
	out, errs := make([]Machine, len(ms)), make([]error, len(ms))
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxBatch)
	for i, m := range ms {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i], errs[i] = s.AddMachine(ctx, m)
		})
	}
	wg.Wait()
	return out, errs
}

// term is a lease's term as stored.
type term struct {
	durNs, expNs int64
	indefinite   bool
}

var errSame = errors.New("same")

// expiry is when a lease on term t fulfilled at now ends (0: never).
func (t term) expiry(now time.Time) int64 {
	switch {
	case t.durNs > 0:
		return now.Add(time.Duration(t.durNs)).UnixNano()
	case !t.indefinite:
		return t.expNs
	}
	return 0
}

// event writes an event of backend's machine host.
func event(ctx context.Context, e engine, tx *sql.Tx, backend, kind, host, lease, onReclaim string, now time.Time) error {
	_, err := e.exec(ctx, tx, "INSERT INTO events (backend, kind, hostname, lease_id, on_reclaim, at) VALUES (?, ?, ?, ?, ?, ?)",
		backend, kind, host, lease, onReclaim, nanos(now))
	return err
}

// Machine returns the catalog entry for hostname.
func (s *Store) Machine(ctx context.Context, hostname string) (Machine, error) {
	ms, err := s.machines(ctx, "WHERE hostname = ?", hostname)
	if err != nil {
		return Machine{}, err
	}
	if len(ms) == 0 {
		return Machine{}, fmt.Errorf("store: machine %s: %w", hostname, ErrNotFound)
	}
	return ms[0], nil
}

// Machines returns the catalog, or one backend's part of it.
func (s *Store) Machines(ctx context.Context, backend string) ([]Machine, error) {
	if backend != "" {
		return s.machines(ctx, "WHERE backend = ? ORDER BY hostname", backend)
	}
	return s.machines(ctx, "ORDER BY hostname")
}

func (s *Store) machines(ctx context.Context, where string, args ...any) ([]Machine, error) {
	var out []Machine
	err := s.engine.read(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.machinesTx(ctx, tx, where, args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: listing machines: %w", err)
	}
	return out, nil
}

func (s *Store) machinesTx(ctx context.Context, tx *sql.Tx, where string, args ...any) ([]Machine, error) {
	rows, err := s.engine.query(ctx, tx, "SELECT hostname, body, state, COALESCE(lease_id, ''), added_at FROM machines "+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Machine
	for rows.Next() {
		var m Machine
		var body string
		var added int64
		if err := rows.Scan(&m.Hostname, &body, &m.State, &m.LeaseID, &added); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			return nil, err
		}
		m.Added = fromNanos(added)
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteMachine removes backend's machine from the catalog; a leased one
// stays (ErrLeased) until its lease ends.
func (s *Store) DeleteMachine(ctx context.Context, backend, hostname string) error {
	return s.engine.tx(ctx, func(tx *sql.Tx) error {
		var state, owner string
		// Waiting for the row: a machine being leased is leased, not
		// missing (SKIP LOCKED would find no row, and its backend would
		// take it for gone and delete it under the lease).
		err := s.engine.queryRow(ctx, tx, ("SELECT state, backend FROM machines WHERE hostname = ?"+s.engine.lockRow()), hostname).Scan(&state, &owner)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("store: machine %s: %w", hostname, ErrNotFound)
		case err != nil:
			return err
		case backend != "" && owner != backend:
			return fmt.Errorf("store: machine %s belongs to backend %s: %w", hostname, owner, ErrNotFound)
		case state == Leased:
			return fmt.Errorf("store: machine %s: %w", hostname, ErrLeased)
		}
		_, err = s.engine.exec(ctx, tx, "DELETE FROM machines WHERE hostname = ?", hostname)
		return err
	})
}

// RequestLease records client's request and fulfils it at once if a
// machine is available. The same request id with the same request returns
// the stored lease; with another request, ErrRequestIDReuse. It reports
// whether the request is new (not a repeat).
func (s *Store) RequestLease(ctx context.Context, client string, r LeaseRequest) (Lease, bool, error) {
	now := s.Now()
	if r.Deadline.IsZero() {
		r.Deadline = now.Add(defaultDeadline)
	}
	r.Dimensions = r.Dimensions.Normalize()
	b, _ := json.Marshal(struct {
		Dimensions Dimensions `json:"dimensions"`
		Term       Term       `json:"term"`
	}{r.Dimensions, r.Term})
	body := string(b)
	t := term{durNs: int64(r.Term.Duration), expNs: nanos(r.Term.ExpiresAt), indefinite: r.Term.Indefinite}
	l, created, err := s.engine.requestLease(ctx, client, body, r, t, s.maxPending(), now)
	if err != nil {
		return Lease{}, false, fmt.Errorf("store: lease request %q: %w", r.RequestID, err)
	}
	return l, created, nil
}

const leaseColumns = "id, client, request_id, body, state, COALESCE(hostname, ''), COALESCE(machine, ''), created_at, deadline, fulfilled_at, expires_at, ended_at"

// leaseRow is a lease as read, its JSON not yet decoded: on SQLite that
// waits until the transaction is over, off the one connection every
// caller waits for.
type leaseRow struct {
	l             Lease
	body, machine string
}

func scanLeaseRow(sc interface{ Scan(...any) error }) (leaseRow, error) {
	var c leaseCols
	if err := sc.Scan(&c.id, &c.client, &c.requestID, &c.body, &c.state, &c.host, &c.machine, &c.created, &c.deadline, &c.fulfilled, &c.expires, &c.ended); err != nil {
		return leaseRow{}, err
	}
	return c.row(), nil
}

// leaseCols are leaseColumns as stored.
type leaseCols struct {
	id, client, requestID, body, state, host, machine string
	created, deadline, fulfilled, expires, ended      int64
}

// row is the lease that these columns hold: what scanLeaseRow returns for
// them, and what a write answers with without reading its row back.
func (c leaseCols) row() leaseRow {
	r := leaseRow{body: c.body, machine: c.machine}
	l := &r.l
	l.ID, l.Client, l.Request.RequestID, l.State, l.Hostname = c.id, c.client, c.requestID, c.state, c.host
	l.Request.Deadline = fromNanos(c.deadline)
	l.Created, l.Fulfilled, l.Ended = fromNanos(c.created), fromNanos(c.fulfilled), fromNanos(c.ended)
	if l.State != Pending {
		l.ExpiresAt = fromNanos(c.expires)
	}
	return r
}

// decode returns the lease with its request and machine decoded.
func (r leaseRow) decode() (Lease, error) {
	l := r.l
	if err := json.Unmarshal([]byte(r.body), &l.Request); err != nil {
		return l, err
	}
	if r.machine != "" {
		l.Machine = &Machine{Hostname: l.Hostname}
		if err := json.Unmarshal([]byte(r.machine), l.Machine); err != nil {
			return l, err
		}
	}
	return l, nil
}

func scanLease(sc interface{ Scan(...any) error }) (Lease, error) {
	r, err := scanLeaseRow(sc)
	if err != nil {
		return r.l, err
	}
	return r.decode()
}

// Lease returns lease id.
func (s *Store) Lease(ctx context.Context, id string) (Lease, error) {
	var r leaseRow
	err := s.engine.read(ctx, func(tx *sql.Tx) error {
		var err error
		r, err = scanLeaseRow(s.engine.queryRow(ctx, tx, "SELECT "+leaseColumns+" FROM leases WHERE id = ?", id))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, fmt.Errorf("store: lease %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Lease{}, err
	}
	return r.decode()
}

// Leases returns client's leases, or everyone's for client "", newest
// first; with active, only those pending or fulfilled.
func (s *Store) Leases(ctx context.Context, client string, active bool) ([]Lease, error) {
	from, args := "SELECT "+leaseColumns+" FROM leases", []any{}
	if client != "" {
		from, args = from+" WHERE client = ?", append(args, client)
	}
	q := from
	if active {
		// One query a state, each in the index that holds only the
		// leases in that state (SQLite scans the table for an OR).
		and := " WHERE "
		if client != "" {
			and, args = " AND ", append(args, client)
		}
		q = from + and + "state = 'PENDING' UNION ALL " + from + and + "state = 'FULFILLED'"
	}
	var rs []leaseRow
	err := s.engine.read(ctx, func(tx *sql.Tx) error {
		rs = nil
		rows, err := s.engine.query(ctx, tx, q+" ORDER BY created_at DESC, id", args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanLeaseRow(rows)
			if err != nil {
				return err
			}
			rs = append(rs, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: listing leases: %w", err)
	}
	out := make([]Lease, 0, len(rs))
	for _, r := range rs {
		l, err := r.decode()
		if err != nil {
			return nil, fmt.Errorf("store: listing leases: %w", err)
		}
		out = append(out, l)
	}
	return out, nil
}

// ExtendLease gives client's fulfilled lease a new term from now.
func (s *Store) ExtendLease(ctx context.Context, client, id string, t Term) (Lease, error) {
	now := s.Now()
	err := s.engine.tx(ctx, func(tx *sql.Tx) error {
		var owner, state string
		// Waiting for the row: a lease another call is changing is there.
		err := s.engine.queryRow(ctx, tx, ("SELECT client, state FROM leases WHERE id = ?"+s.engine.lockRow()), id).Scan(&owner, &state)
		switch {
		case errors.Is(err, sql.ErrNoRows) || err == nil && client != "" && owner != client:
			return fmt.Errorf("lease %s: %w", id, ErrNotFound)
		case err != nil:
			return err
		case state != Fulfilled:
			return fmt.Errorf("lease %s is %s: %w", id, state, ErrNotActive)
		}
		expires := int64(0)
		switch {
		case t.Duration > 0:
			expires = now.Add(t.Duration).UnixNano()
		case !t.Indefinite:
			expires = nanos(t.ExpiresAt)
		}
		_, err = s.engine.exec(ctx, tx, "UPDATE leases SET expires_at = ? WHERE id = ?", expires, id)
		return err
	})
	if err != nil {
		return Lease{}, fmt.Errorf("store: extending: %w", err)
	}
	return s.Lease(ctx, id)
}

// ReleaseLease ends client's lease: a pending request is withdrawn, a
// fulfilled lease's machine is reclaimed (taken out of the catalog, its
// backend told through the event feed). It returns the lease and whether
// this call ended it (releasing again changes nothing).
func (s *Store) ReleaseLease(ctx context.Context, client, id string) (Lease, bool, error) {
	now := s.Now()
	l, ended, err := s.engine.releaseLease(ctx, client, id, now)
	if err != nil {
		return Lease{}, false, fmt.Errorf("store: releasing: %w", err)
	}
	return l, ended, nil
}

// end moves lease id to state and reclaims its machine, if any.
func (s *Store) end(ctx context.Context, tx *sql.Tx, id, host, state string, now time.Time) error {
	if _, err := s.engine.exec(ctx, tx, "UPDATE leases SET state = ?, ended_at = ? WHERE id = ?", state, nanos(now), id); err != nil {
		return err
	}
	return reclaim(ctx, s.engine, tx, id, host, now)
}

// reclaim takes machine host, leased by id, out of the catalog and tells
// its backend. Nothing happens for host "" (a request never fulfilled).
func reclaim(ctx context.Context, e engine, tx *sql.Tx, id, host string, now time.Time) error {
	if host == "" {
		return nil
	}
	var backend, onReclaim string
	err := e.queryRow(ctx, tx, "DELETE FROM machines WHERE hostname = ? AND lease_id = ? RETURNING backend, "+e.onReclaim(), host, id).Scan(&backend, &onReclaim)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return event(ctx, e, tx, backend, "reclaimed", host, id, onReclaim, now)
}

// Expire ends the leases whose time is up and denies the requests whose
// deadline passed. It returns the ids of those it ended (for the long
// polls that wait for them) and when the next one is due (zero if none).
func (s *Store) Expire(ctx context.Context) ([]string, time.Time, error) {
	now := s.Now()
	var ended []string
	err := s.engine.tx(ctx, func(tx *sql.Tx) error {
		ended = nil
		// Before any row lock: see eventsLock.
		if err := s.engine.lockEvents(ctx, tx); err != nil {
			return err
		}
		// One query a state, each in the index that holds only the leases
		// in that state (SQLite scans the table for an OR of the two).
		type due struct{ id, state, host string }
		var all []due
		for _, q := range []string{
			"SELECT id, state, COALESCE(hostname, '') FROM leases WHERE state = 'FULFILLED' AND expires_at > 0 AND expires_at <= ?",
			"SELECT id, state, COALESCE(hostname, '') FROM leases WHERE state = 'PENDING' AND deadline <= ?",
		} {
			rows, err := s.engine.query(ctx, tx, q+s.engine.forUpdate(), nanos(now))
			if err != nil {
				return err
			}
			for rows.Next() {
				var d due
				if err := rows.Scan(&d.id, &d.state, &d.host); err != nil {
					rows.Close()
					return err
				}
				all = append(all, d)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		for _, d := range all {
			to := Expired
			if d.state == Pending {
				to = Denied
			}
			if err := s.end(ctx, tx, d.id, d.host, to, now); err != nil {
				return err
			}
			ended = append(ended, d.id)
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("store: expiring leases: %w", err)
	}
	var next sql.NullInt64
	err = s.engine.read(ctx, func(tx *sql.Tx) error {
		return s.engine.queryRow(ctx, tx, `SELECT MIN(t) FROM (
		SELECT MIN(expires_at) AS t FROM leases WHERE state = 'FULFILLED' AND expires_at > 0
		UNION ALL SELECT MIN(deadline) AS t FROM leases WHERE state = 'PENDING') AS due`).Scan(&next)
	})
	if err != nil {
		return ended, time.Time{}, fmt.Errorf("store: next expiry: %w", err)
	}
	if !next.Valid {
		return ended, time.Time{}, nil
	}
	return ended, fromNanos(next.Int64), nil
}

// PruneLeases deletes up to limit leases that ended before endedBefore
// and returns how many. Until then a lease can be read and its request
// repeated (the same request id answers with it); after, the same request
// id makes a new request.
func (s *Store) PruneLeases(ctx context.Context, endedBefore time.Time, limit int) (int, error) {
	// Ids begin with the creation time (newID): a lease that ended before
	// endedBefore was made before it, so only ids below that time's are
	// looked at, the oldest first, and no index on ended_at is kept up
	// on every release for this.
	below := newID(endedBefore)[:16]
	return s.delete(ctx, "ended leases", `DELETE FROM leases WHERE id IN (SELECT id FROM leases
		WHERE id < ? AND state IN ('RELEASED', 'EXPIRED', 'DENIED') AND ended_at > 0 AND ended_at < ? ORDER BY id LIMIT ?)`,
		below, nanos(endedBefore), limit)
}

// PruneEvents deletes up to limit of the oldest events, those written
// before before, and returns how many. A backend whose cursor is older
// than the events deleted reads on from the first one kept, and a
// hostname whose reclamation event is gone may be cataloged again
// (ErrReclaimed guards only as long as the event is kept).
func (s *Store) PruneEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	// Only the first limit events by id are looked at: ids follow the
	// time they were written, so the old ones are a prefix of the table,
	// and a call costs the same however many events are kept. An event a
	// little out of time order ends a call's run early; the next call,
	// later, takes it.
	return s.delete(ctx, "events", `DELETE FROM events WHERE id IN
		(SELECT id FROM (SELECT id, at FROM events ORDER BY id LIMIT ?) AS oldest WHERE at < ?)`,
		limit, nanos(before))
}

// delete runs a DELETE statement in a transaction of its own and returns
// how many rows it deleted; what names them in an error.
func (s *Store) delete(ctx context.Context, what, query string, args ...any) (int, error) {
	var n int64
	err := s.engine.tx(ctx, func(tx *sql.Tx) error {
		res, err := s.engine.exec(ctx, tx, query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: pruning %s: %w", what, err)
	}
	return int(n), nil
}

// Events returns up to limit events of backend (all backends for "")
// after cursor, oldest first.
func (s *Store) Events(ctx context.Context, backend string, after int64, limit int) ([]Event, error) {
	q, args := "SELECT id, backend, kind, hostname, lease_id, COALESCE(on_reclaim, ''), at FROM events WHERE id > ?", []any{after}
	if backend != "" {
		q, args = q+" AND backend = ?", append(args, backend)
	}
	var out []Event
	err := s.engine.read(ctx, func(tx *sql.Tx) error {
		out = nil
		rows, err := s.engine.query(ctx, tx, q+" ORDER BY id LIMIT ?", append(args, limit)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e Event
			var at int64
			if err := rows.Scan(&e.ID, &e.Backend, &e.Kind, &e.Hostname, &e.LeaseID, &e.OnReclaim, &at); err != nil {
				return err
			}
			e.At = fromNanos(at)
			out = append(out, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: events: %w", err)
	}
	return out, nil
}

// Counts returns machines by state and active leases (PENDING,
// FULFILLED) by state, for metrics. Ended leases are not counted: they
// only accumulate, and counting them would read them all.
func (s *Store) Counts(ctx context.Context) (machines, leases map[string]int, err error) {
	machines, leases = map[string]int{}, map[string]int{}
	err = s.engine.read(ctx, func(tx *sql.Tx) error {
		var total, available, pending, fulfilled int
		// States are literals so that SQLite counts in the indexes that
		// hold only the rows in each.
		if err := s.engine.queryRow(ctx, tx, `SELECT (SELECT COUNT(*) FROM machines), (SELECT COUNT(*) FROM machines WHERE state = 'AVAILABLE'),
			(SELECT COUNT(*) FROM leases WHERE state = 'PENDING'), (SELECT COUNT(*) FROM leases WHERE state = 'FULFILLED')`).Scan(
			&total, &available, &pending, &fulfilled); err != nil {
			return err
		}
		machines[Available], machines[Leased] = available, total-available
		leases[Pending], leases[Fulfilled] = pending, fulfilled
		return nil
	})
	return machines, leases, err
}

// Maintain refreshes the query planner's statistics. The catalog can grow
// from nothing to thousands of machines in seconds, faster than
// PostgreSQL's autovacuum notices, and a planner that believes the tables
// empty picks plans a hundred times slower. The provider calls it every
// minute; it takes milliseconds.
func (s *Store) Maintain(ctx context.Context) error {
	return s.engine.maintain(ctx)
}

// A Change is what Listen hears: a change of lease Lease, or new events
// of backend Backend (Events), or of the queue (Demand), or, with none,
// anything (as when listening begins).
type Change struct {
	Lease   string
	Events  bool
	Backend string
	// Demand says that the queue gained or lost a request.
	Demand bool
}

// Listen calls changed each time a process using the same database
// commits a change of a lease or new events, and once with the zero
// Change when it starts to listen (what came before is unknown to the
// caller), until ctx ends or the connection fails. It is how replicas on
// one PostgreSQL database wake each other's long polls. On SQLite, which
// one process uses, there is nothing to hear: it returns nil at once.
func (s *Store) Listen(ctx context.Context, changed func(Change)) error {
	return s.engine.listen(ctx, changed)
}
