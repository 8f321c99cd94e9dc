package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrNotLeader is returned by a write fenced by a leadership that its
// holder no longer has.
var ErrNotLeader = errors.New("not the leader")

// Fence makes a write conditional on Holder leading Name (see Lead). The
// zero Fence writes unconditionally.
type Fence struct {
	Name, Holder string
}

// Get returns the value stored under key, or ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (string, error) {
	var v string
	err := s.engine.read(ctx, func(tx *sql.Tx) error {
		return s.engine.queryRow(ctx, tx, "SELECT v FROM kv WHERE k = ?", key).Scan(&v)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("store: %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("store: reading %s: %w", key, err)
	}
	return v, nil
}

// Put stores value under key. With a fence, it writes only while the
// fence's holder leads, and fails with ErrNotLeader otherwise, so that a
// replica that lost its leadership without noticing cannot overwrite its
// successor's state.
func (s *Store) Put(ctx context.Context, key, value string, f Fence) error {
	now := s.Now()
	err := s.engine.tx(ctx, func(tx *sql.Tx) error {
		if f != (Fence{}) {
			var holder string
			err := s.engine.queryRow(ctx, tx, "SELECT holder FROM leaders WHERE name = ? AND holder = ? AND expires_at > ?"+s.engine.forShare(),
				f.Name, f.Holder, nanos(now)).Scan(&holder)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%s is not held by %s: %w", f.Name, f.Holder, ErrNotLeader)
			}
			if err != nil {
				return err
			}
		}
		_, err := s.engine.exec(ctx, tx, "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", key, value)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: writing %s: %w", key, err)
	}
	return nil
}

// PutIfAbsent stores value under key unless a value is stored there
// already, and returns the value stored: of callers racing on one key,
// on one database or several replicas of it, every one gets the first's.
func (s *Store) PutIfAbsent(ctx context.Context, key, value string) (string, error) {
	var stored string
	err := s.engine.tx(ctx, func(tx *sql.Tx) error {
		// On PostgreSQL the insert waits for a concurrent one of the key
		// to commit and then does nothing; the select, a statement of its
		// own under READ COMMITTED, sees the committed row.
		if _, err := s.engine.exec(ctx, tx, "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO NOTHING", key, value); err != nil {
			return err
		}
		return s.engine.queryRow(ctx, tx, "SELECT v FROM kv WHERE k = ?", key).Scan(&stored)
	})
	if err != nil {
		return "", fmt.Errorf("store: writing %s: %w", key, err)
	}
	return stored, nil
}

// Lead makes holder the leader of name for ttl, if nobody else leads it,
// or renews its leadership; it reports whether holder leads. Replicas call
// it every fraction of ttl; when a leader stops renewing (it died), the
// next caller after ttl takes over.
func (s *Store) Lead(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	now := s.Now()
	var n int64
	err := s.engine.tx(ctx, func(tx *sql.Tx) error {
		res, err := s.engine.exec(ctx, tx, `INSERT INTO leaders (name, holder, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
			WHERE leaders.holder = excluded.holder OR leaders.expires_at <= ?`,
			name, holder, now.Add(ttl).UnixNano(), nanos(now))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: leading %s: %w", name, err)
	}
	return n == 1, nil
}

// Resign gives up holder's leadership of name, so that another replica
// takes over at once rather than after the ttl.
func (s *Store) Resign(ctx context.Context, name, holder string) error {
	return s.engine.tx(ctx, func(tx *sql.Tx) error {
		_, err := s.engine.exec(ctx, tx, "DELETE FROM leaders WHERE name = ? AND holder = ?", name, holder)
		return err
	})
}
