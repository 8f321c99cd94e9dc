// Package store keeps the Machine Provider's catalog, leases and event feed
// in SQLite (the embedded default) or PostgreSQL (for several replicas of
// the service). Every operation is one transaction: a machine is never
// leased twice, and a crash at any point loses no acknowledged change.
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // the "sqlite" database/sql driver
)

// Store is an open database.
type Store struct {
	db       *sql.DB
	postgres bool
	// Now is the clock; tests may replace it before use.
	Now func() time.Time
}

// Open opens the database at url and applies migrations: a PostgreSQL URL
// (postgres://...), a SQLite file (sqlite:PATH or a plain path), or
// ":memory:" for a private in-memory SQLite database.
func Open(ctx context.Context, url string) (*Store, error) {
	s := &Store{Now: time.Now}
	var err error
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		s.postgres = true
		s.db, err = sql.Open("pgx", url)
		if err == nil {
			s.db.SetMaxOpenConns(16)
		}
	default:
		path := strings.TrimPrefix(url, "sqlite:")
		if path == "" {
			return nil, errors.New("store: empty database path")
		}
		dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_txlock=immediate"
		if path != ":memory:" {
			// WAL: readers do not block the writer; synchronous NORMAL is
			// durable against a crash of the process (not of the OS).
			dsn += "&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
		}
		s.db, err = sql.Open("sqlite", dsn)
		if err == nil {
			// One connection: SQLite has one writer anyway, and an
			// in-memory database exists per connection.
			s.db.SetMaxOpenConns(1)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", redact(url), err)
	}
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("store: connecting to %s: %w", redact(url), err)
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// redact hides a password in a URL for messages.
func redact(url string) string {
	if at := strings.LastIndexByte(url, '@'); at > 0 {
		if scheme := strings.Index(url, "://"); scheme > 0 && scheme < at {
			if colon := strings.IndexByte(url[scheme+3:at], ':'); colon >= 0 {
				return url[:scheme+3+colon] + ":***" + url[at:]
			}
		}
	}
	return url
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Dialect returns "sqlite" or "postgres".
func (s *Store) Dialect() string {
	if s.postgres {
		return "postgres"
	}
	return "sqlite"
}

// q rewrites ? placeholders for PostgreSQL.
func (s *Store) q(query string) string {
	if !s.postgres {
		return query
	}
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

// forUpdate locks selected rows on PostgreSQL, skipping rows another
// transaction holds; SQLite transactions hold the whole database.
func (s *Store) forUpdate() string {
	if s.postgres {
		return " FOR UPDATE SKIP LOCKED"
	}
	return ""
}

// tx runs f in a transaction, retrying when PostgreSQL reports a
// serialization failure or deadlock.
func (s *Store) tx(ctx context.Context, f func(*sql.Tx) error) error {
	for attempt := 0; ; attempt++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("store: begin: %w", err)
		}
		err = f(tx)
		if err == nil {
			err = tx.Commit()
		} else {
			tx.Rollback()
		}
		var pe *pgconn.PgError
		if err != nil && errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01") && attempt < 10 {
			continue
		}
		return err
	}
}

// matchLock serializes the transactions that make machines available or
// requests pending on PostgreSQL, so that a new machine and a new request
// cannot miss each other. SQLite transactions are serial already.
func (s *Store) matchLock(ctx context.Context, tx *sql.Tx) error {
	if !s.postgres {
		return nil
	}
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7210)")
	return err
}

func newID() string {
	b := make([]byte, 10)
	rand.Read(b)
	return hex.EncodeToString(b)
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
	}{m.Backend, m.Dimensions.normalize(), m.Policies, m.Connection})
	return string(b)
}

// AddMachine catalogs m. Adding a hostname again with the same body does
// nothing; with another body it fails with ErrConflict. A new machine goes
// at once to the oldest pending request it satisfies.
func (s *Store) AddMachine(ctx context.Context, m Machine) (Machine, error) {
	if m.Policies.OnReclaim == "" {
		m.Policies.OnReclaim = "DELETE"
	}
	body := machineBody(m)
	now := s.Now()
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.matchLock(ctx, tx); err != nil {
			return err
		}
		var old string
		err := tx.QueryRowContext(ctx, s.q("SELECT body FROM machines WHERE hostname = ?"), m.Hostname).Scan(&old)
		switch {
		case err == nil && old == body:
			return errSame
		case err == nil:
			return fmt.Errorf("%w: %s is cataloged already with another body: %s", ErrConflict, m.Hostname, old)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q("INSERT INTO machines (hostname, backend, body, state, added_at) VALUES (?, ?, ?, ?, ?)"),
			m.Hostname, m.Backend, body, Available, nanos(now)); err != nil {
			return err
		}
		for k, vs := range m.Dimensions.normalize() {
			for _, v := range vs {
				if _, err := tx.ExecContext(ctx, s.q("INSERT INTO machine_dims (hostname, k, v) VALUES (?, ?, ?)"), m.Hostname, k, v); err != nil {
					return err
				}
			}
		}
		// The oldest pending request whose every dimension the machine has.
		var lease string
		err = tx.QueryRowContext(ctx, s.q(`SELECT l.id FROM leases l WHERE l.state = ? AND l.deadline > ? AND NOT EXISTS (
			SELECT 1 FROM lease_dims d WHERE d.lease_id = l.id AND NOT EXISTS (
				SELECT 1 FROM machine_dims md WHERE md.hostname = ? AND md.k = d.k AND md.v = d.v))
			ORDER BY l.created_at, l.id LIMIT 1`+s.forUpdate()), Pending, nanos(now), m.Hostname).Scan(&lease)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		return s.assign(ctx, tx, lease, m.Hostname, now)
	})
	if errors.Is(err, errSame) {
		err = nil
	}
	if err != nil {
		return Machine{}, fmt.Errorf("store: adding machine %s: %w", m.Hostname, err)
	}
	return s.Machine(ctx, m.Hostname)
}

var errSame = errors.New("same")

// assign gives machine host to pending lease id. tx holds both rows.
func (s *Store) assign(ctx context.Context, tx *sql.Tx, id, host string, now time.Time) error {
	var body, backend string
	var durNs, expNs int64
	var indefinite bool
	if err := tx.QueryRowContext(ctx, s.q("SELECT l.duration_ns, l.expires_at, l.indefinite, m.body, m.backend FROM leases l, machines m WHERE l.id = ? AND m.hostname = ?"), id, host).
		Scan(&durNs, &expNs, &indefinite, &body, &backend); err != nil {
		return err
	}
	expires := int64(0)
	switch {
	case durNs > 0:
		expires = now.Add(time.Duration(durNs)).UnixNano()
	case !indefinite:
		expires = expNs
	}
	if _, err := tx.ExecContext(ctx, s.q("UPDATE machines SET state = ?, lease_id = ? WHERE hostname = ?"), Leased, id, host); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, s.q("UPDATE leases SET state = ?, hostname = ?, machine = ?, fulfilled_at = ?, expires_at = ? WHERE id = ?"),
		Fulfilled, host, body, nanos(now), expires, id); err != nil {
		return err
	}
	return s.event(ctx, tx, backend, "leased", host, id, "", now)
}

func (s *Store) event(ctx context.Context, tx *sql.Tx, backend, kind, host, lease, onReclaim string, now time.Time) error {
	_, err := tx.ExecContext(ctx, s.q("INSERT INTO events (backend, kind, hostname, lease_id, on_reclaim, at) VALUES (?, ?, ?, ?, ?, ?)"),
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
	rows, err := s.db.QueryContext(ctx, s.q("SELECT hostname, body, state, COALESCE(lease_id, ''), added_at FROM machines "+where), args...)
	if err != nil {
		return nil, fmt.Errorf("store: listing machines: %w", err)
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
	return s.tx(ctx, func(tx *sql.Tx) error {
		var state, owner string
		err := tx.QueryRowContext(ctx, s.q("SELECT state, backend FROM machines WHERE hostname = ?"+s.forUpdate()), hostname).Scan(&state, &owner)
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
		if _, err := tx.ExecContext(ctx, s.q("DELETE FROM machine_dims WHERE hostname = ?"), hostname); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.q("DELETE FROM machines WHERE hostname = ?"), hostname)
		return err
	})
}

// RequestLease records client's request and fulfils it at once if a
// machine is available. The same request id with the same request returns
// the stored lease; with another request, ErrRequestIDReuse.
func (s *Store) RequestLease(ctx context.Context, client string, r LeaseRequest) (Lease, error) {
	now := s.Now()
	if r.Deadline.IsZero() {
		r.Deadline = now.Add(24 * time.Hour)
	}
	r.Dimensions = r.Dimensions.normalize()
	b, _ := json.Marshal(struct {
		Dimensions Dimensions `json:"dimensions"`
		Term       Term       `json:"term"`
	}{r.Dimensions, r.Term})
	body := string(b)
	var id string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.matchLock(ctx, tx); err != nil {
			return err
		}
		var old string
		err := tx.QueryRowContext(ctx, s.q("SELECT id, body FROM leases WHERE client = ? AND request_id = ?"), client, r.RequestID).Scan(&id, &old)
		switch {
		case err == nil && old == body:
			return nil
		case err == nil:
			return fmt.Errorf("%w: request id %q was used for %s", ErrRequestIDReuse, r.RequestID, old)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		id = newID()
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO leases (id, client, request_id, body, state, created_at, deadline, duration_ns, expires_at, indefinite)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			id, client, r.RequestID, body, Pending, nanos(now), nanos(r.Deadline), int64(r.Term.Duration), nanos(r.Term.ExpiresAt), r.Term.Indefinite); err != nil {
			return err
		}
		for k, vs := range r.Dimensions {
			for _, v := range vs {
				if _, err := tx.ExecContext(ctx, s.q("INSERT INTO lease_dims (lease_id, k, v) VALUES (?, ?, ?)"), id, k, v); err != nil {
					return err
				}
			}
		}
		// No older request wants an available machine (each was offered
		// every machine as it arrived), so the first match is this one's.
		var host string
		err = tx.QueryRowContext(ctx, s.q(`SELECT m.hostname FROM machines m WHERE m.state = ? AND NOT EXISTS (
			SELECT 1 FROM lease_dims d WHERE d.lease_id = ? AND NOT EXISTS (
				SELECT 1 FROM machine_dims md WHERE md.hostname = m.hostname AND md.k = d.k AND md.v = d.v))
			ORDER BY m.added_at, m.hostname LIMIT 1`+s.forUpdate()), Available, id).Scan(&host)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		return s.assign(ctx, tx, id, host, now)
	})
	if err != nil {
		return Lease{}, fmt.Errorf("store: lease request %q: %w", r.RequestID, err)
	}
	return s.Lease(ctx, id)
}

const leaseColumns = "id, client, request_id, body, state, COALESCE(hostname, ''), COALESCE(machine, ''), created_at, deadline, fulfilled_at, expires_at, ended_at"

func scanLease(sc interface{ Scan(...any) error }) (Lease, error) {
	var l Lease
	var body, machine string
	var created, deadline, fulfilled, expires, ended int64
	if err := sc.Scan(&l.ID, &l.Client, &l.Request.RequestID, &body, &l.State, &l.Hostname, &machine, &created, &deadline, &fulfilled, &expires, &ended); err != nil {
		return l, err
	}
	if err := json.Unmarshal([]byte(body), &l.Request); err != nil {
		return l, err
	}
	if machine != "" {
		l.Machine = &Machine{Hostname: l.Hostname}
		if err := json.Unmarshal([]byte(machine), l.Machine); err != nil {
			return l, err
		}
	}
	l.Request.Deadline = fromNanos(deadline)
	l.Created, l.Fulfilled, l.Ended = fromNanos(created), fromNanos(fulfilled), fromNanos(ended)
	if l.State != Pending {
		l.ExpiresAt = fromNanos(expires)
	}
	return l, nil
}

// Lease returns lease id.
func (s *Store) Lease(ctx context.Context, id string) (Lease, error) {
	l, err := scanLease(s.db.QueryRowContext(ctx, s.q("SELECT "+leaseColumns+" FROM leases WHERE id = ?"), id))
	if errors.Is(err, sql.ErrNoRows) {
		return l, fmt.Errorf("store: lease %s: %w", id, ErrNotFound)
	}
	return l, err
}

// Leases returns client's leases, or everyone's for client "", newest
// first; with active, only those pending or fulfilled.
func (s *Store) Leases(ctx context.Context, client string, active bool) ([]Lease, error) {
	where, args := []string{}, []any{}
	if client != "" {
		where, args = append(where, "client = ?"), append(args, client)
	}
	if active {
		where, args = append(where, "state IN (?, ?)"), append(args, Pending, Fulfilled)
	}
	q := "SELECT " + leaseColumns + " FROM leases"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := s.db.QueryContext(ctx, s.q(q+" ORDER BY created_at DESC, id"), args...)
	if err != nil {
		return nil, fmt.Errorf("store: listing leases: %w", err)
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// ExtendLease gives client's fulfilled lease a new term from now.
func (s *Store) ExtendLease(ctx context.Context, client, id string, t Term) (Lease, error) {
	now := s.Now()
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var owner, state string
		err := tx.QueryRowContext(ctx, s.q("SELECT client, state FROM leases WHERE id = ?"+s.forUpdate()), id).Scan(&owner, &state)
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
		_, err = tx.ExecContext(ctx, s.q("UPDATE leases SET expires_at = ? WHERE id = ?"), expires, id)
		return err
	})
	if err != nil {
		return Lease{}, fmt.Errorf("store: extending: %w", err)
	}
	return s.Lease(ctx, id)
}

// ReleaseLease ends client's lease: a pending request is withdrawn, a
// fulfilled lease's machine is reclaimed (taken out of the catalog, its
// backend told through the event feed).
func (s *Store) ReleaseLease(ctx context.Context, client, id string) (Lease, error) {
	now := s.Now()
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var owner, state string
		var host sql.NullString
		err := tx.QueryRowContext(ctx, s.q("SELECT client, state, hostname FROM leases WHERE id = ?"+s.forUpdate()), id).Scan(&owner, &state, &host)
		switch {
		case errors.Is(err, sql.ErrNoRows) || err == nil && client != "" && owner != client:
			return fmt.Errorf("lease %s: %w", id, ErrNotFound)
		case err != nil:
			return err
		case state != Pending && state != Fulfilled:
			return nil // ended already: releasing again changes nothing
		}
		return s.end(ctx, tx, id, host.String, Released, now)
	})
	if err != nil {
		return Lease{}, fmt.Errorf("store: releasing: %w", err)
	}
	return s.Lease(ctx, id)
}

// end moves lease id to state and reclaims its machine, if any.
func (s *Store) end(ctx context.Context, tx *sql.Tx, id, host, state string, now time.Time) error {
	if _, err := tx.ExecContext(ctx, s.q("UPDATE leases SET state = ?, ended_at = ? WHERE id = ?"), state, nanos(now), id); err != nil {
		return err
	}
	if host == "" {
		return nil
	}
	var backend, body string
	err := tx.QueryRowContext(ctx, s.q("SELECT backend, body FROM machines WHERE hostname = ? AND lease_id = ?"), host, id).Scan(&backend, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	var m Machine
	json.Unmarshal([]byte(body), &m)
	if _, err := tx.ExecContext(ctx, s.q("DELETE FROM machine_dims WHERE hostname = ?"), host); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, s.q("DELETE FROM machines WHERE hostname = ?"), host); err != nil {
		return err
	}
	return s.event(ctx, tx, backend, "reclaimed", host, id, m.Policies.OnReclaim, now)
}

// Expire ends the leases whose time is up and denies the requests whose
// deadline passed, and returns when the next one is due (zero if none).
func (s *Store) Expire(ctx context.Context) (time.Time, error) {
	now := s.Now()
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, s.q(`SELECT id, state, COALESCE(hostname, '') FROM leases
			WHERE (state = ? AND expires_at > 0 AND expires_at <= ?) OR (state = ? AND deadline <= ?)`+s.forUpdate()),
			Fulfilled, nanos(now), Pending, nanos(now))
		if err != nil {
			return err
		}
		type due struct{ id, state, host string }
		var all []due
		for rows.Next() {
			var d due
			if err := rows.Scan(&d.id, &d.state, &d.host); err != nil {
				rows.Close()
				return err
			}
			all = append(all, d)
		}
		rows.Close()
		for _, d := range all {
			to := Expired
			if d.state == Pending {
				to = Denied
			}
			if err := s.end(ctx, tx, d.id, d.host, to, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("store: expiring leases: %w", err)
	}
	var next sql.NullInt64
	err = s.db.QueryRowContext(ctx, s.q(`SELECT MIN(t) FROM (
		SELECT MIN(expires_at) AS t FROM leases WHERE state = ? AND expires_at > 0
		UNION ALL SELECT MIN(deadline) AS t FROM leases WHERE state = ?) AS due`), Fulfilled, Pending).Scan(&next)
	if err != nil {
		return time.Time{}, fmt.Errorf("store: next expiry: %w", err)
	}
	if !next.Valid {
		return time.Time{}, nil
	}
	return fromNanos(next.Int64), nil
}

// Events returns up to limit events of backend (all backends for "")
// after cursor, oldest first.
func (s *Store) Events(ctx context.Context, backend string, after int64, limit int) ([]Event, error) {
	q, args := "SELECT id, backend, kind, hostname, lease_id, COALESCE(on_reclaim, ''), at FROM events WHERE id > ?", []any{after}
	if backend != "" {
		q, args = q+" AND backend = ?", append(args, backend)
	}
	rows, err := s.db.QueryContext(ctx, s.q(q+" ORDER BY id LIMIT ?"), append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("store: events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var at int64
		if err := rows.Scan(&e.ID, &e.Backend, &e.Kind, &e.Hostname, &e.LeaseID, &e.OnReclaim, &at); err != nil {
			return nil, err
		}
		e.At = fromNanos(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Counts returns machines by state and leases by state, for metrics.
func (s *Store) Counts(ctx context.Context) (machines, leases map[string]int, err error) {
	machines, leases = map[string]int{}, map[string]int{}
	for _, c := range []struct {
		q   string
		out map[string]int
	}{
		{"SELECT state, COUNT(*) FROM machines GROUP BY state", machines},
		{"SELECT state, COUNT(*) FROM leases GROUP BY state", leases},
	} {
		rows, err := s.db.QueryContext(ctx, c.q)
		if err != nil {
			return nil, nil, err
		}
		for rows.Next() {
			var st string
			var n int
			if err := rows.Scan(&st, &n); err != nil {
				rows.Close()
				return nil, nil, err
			}
			c.out[st] = n
		}
		rows.Close()
	}
	return machines, leases, nil
}
