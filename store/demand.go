package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/gcefleet/gcefleet/provider/api"
)

// The store's view of demand and offers keeps the API's types.
type (
	DemandSet = api.DemandSet
	Offer     = api.Offer
)

// Demand returns the pending requests grouped by the set of dimensions
// they ask for: how many wait for each set and since when the oldest
// has, the longest-waiting set first. It reads the queue's tables (one
// row a request, one a key=value of each set), not the leases.
func (s *Store) Demand(ctx context.Context) ([]DemandSet, error) {
	type agg struct {
		n      int
		oldest int64
		dims   Dimensions
	}
	var out []DemandSet
	// One statement, so that one snapshot gives the counts and the sets'
	// dimensions (a request fulfilled between two would leave a count
	// without its dimensions).
	err := s.engine.read(ctx, func(tx *sql.Tx) error {
		out = nil
		by := map[string]*agg{}
		rows, err := s.engine.query(ctx, tx, `SELECT q.shape, q.n, q.oldest, s.kv FROM
			(SELECT shape, COUNT(*) AS n, MIN(created_at) AS oldest FROM queue GROUP BY shape) q
			JOIN queue_shapes s ON s.shape = q.shape`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var shape, pair string
			var n int
			var oldest int64
			if err := rows.Scan(&shape, &n, &oldest, &pair); err != nil {
				return err
			}
			a := by[shape]
			if a == nil {
				a = &agg{n: n, oldest: oldest, dims: Dimensions{}}
				by[shape] = a
			}
			if pair != "" {
				k, v, _ := strings.Cut(pair, "=")
				a.dims[k] = append(a.dims[k], v)
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, a := range by {
			out = append(out, DemandSet{Dimensions: a.dims.Normalize(), Pending: a.n, Oldest: fromNanos(a.oldest)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: demand: %w", err)
	}
	sort.Slice(out, func(a, b int) bool {
		if !out[a].Oldest.Equal(out[b].Oldest) {
			return out[a].Oldest.Before(out[b].Oldest)
		}
		return dimsKey(out[a].Dimensions) < dimsKey(out[b].Dimensions)
	})
	return out, nil
}

// dimsKey is d as one sorted string, to order and tell sets apart.
func dimsKey(d Dimensions) string {
	pairs := kv(d.Normalize())
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// QueuePosition returns where pending lease id stands among the requests
// for the same set of dimensions (1 is next: a machine of that set goes
// to it first) and how many such requests wait; 0, 0 for a lease not
// pending. It counts in the queue's index of that set.
func (s *Store) QueuePosition(ctx context.Context, id string) (pos, of int, err error) {
	q := `SELECT COALESCE(SUM(CASE WHEN q.created_at < me.c OR (q.created_at = me.c AND q.lease_id <= me.id) THEN 1 ELSE 0 END), 0), COUNT(*)
		FROM queue q, (SELECT ` + s.engine.shape("l.kv") + ` AS shape, l.created_at AS c, l.id AS id FROM leases l WHERE l.id = ? AND l.state = 'PENDING') me
		WHERE q.shape = me.shape`
	err = s.engine.read(ctx, func(tx *sql.Tx) error {
		return s.engine.queryRow(ctx, tx, q, id).Scan(&pos, &of)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("store: queue position of %s: %w", id, err)
	}
	return pos, of, nil
}

// PutOffers replaces what backend offers to make with offers, live until
// now+ttl: offers a backend stops publishing expire then.
func (s *Store) PutOffers(ctx context.Context, backend string, offers []Offer, ttl time.Duration) error {
	for i := range offers {
		offers[i].Backend = ""
		offers[i].Dimensions = offers[i].Dimensions.Normalize()
	}
	b, err := json.Marshal(offers)
	if err != nil {
		return fmt.Errorf("store: offers of %s: %w", backend, err)
	}
	exp := s.Now().Add(ttl)
	err = s.engine.tx(ctx, func(tx *sql.Tx) error {
		if len(offers) == 0 {
			_, err := s.engine.exec(ctx, tx, "DELETE FROM offers WHERE backend = ?", backend)
			return err
		}
		res, err := s.engine.exec(ctx, tx, "UPDATE offers SET body = ?, expires_at = ? WHERE backend = ?", string(b), nanos(exp), backend)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n > 0 {
			return err
		}
		_, err = s.engine.exec(ctx, tx, "INSERT INTO offers (backend, body, expires_at) VALUES (?, ?, ?)", backend, string(b), nanos(exp))
		return err
	})
	if err != nil {
		return fmt.Errorf("store: offers of %s: %w", backend, err)
	}
	return nil
}

// Offers returns every backend's live offers (those whose publication
// has not expired), each with its backend, by backend.
func (s *Store) Offers(ctx context.Context) ([]Offer, error) {
	var out []Offer
	err := s.engine.read(ctx, func(tx *sql.Tx) error {
		out = nil
		rows, err := s.engine.query(ctx, tx, "SELECT backend, body FROM offers WHERE expires_at > ? ORDER BY backend", nanos(s.Now()))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var backend, body string
			if err := rows.Scan(&backend, &body); err != nil {
				return err
			}
			var os []Offer
			if err := json.Unmarshal([]byte(body), &os); err != nil {
				return err
			}
			for _, o := range os {
				o.Backend = backend
				out = append(out, o)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: offers: %w", err)
	}
	return out, nil
}

// AnyMachine says whether a cataloged machine, leased or not, has every
// dimension of d.
func (s *Store) AnyMachine(ctx context.Context, d Dimensions) (bool, error) {
	var found int
	err := s.engine.read(ctx, func(tx *sql.Tx) error {
		return s.engine.queryRow(ctx, tx, "SELECT 1 FROM machines WHERE "+s.engine.hasAll("kv")+" LIMIT 1", s.engine.kvArg(kv(d.Normalize()))).Scan(&found)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: looking for a machine with %s: %w", dimsKey(d), err)
	}
	return true, nil
}

// Requested says whether client has made a request with requestID that
// is still kept: a repeat of it answers with the stored lease, whatever
// is offered now.
func (s *Store) Requested(ctx context.Context, client, requestID string) (bool, error) {
	var n int
	err := s.engine.read(ctx, func(tx *sql.Tx) error {
		return s.engine.queryRow(ctx, tx, "SELECT COUNT(*) FROM leases WHERE client = ? AND request_id = ?", client, requestID).Scan(&n)
	})
	if err != nil {
		return false, fmt.Errorf("store: looking for request %q: %w", requestID, err)
	}
	return n > 0, nil
}
