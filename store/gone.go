package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// MachineGone takes machine hostname of backend ("" for any) out of the
// catalog because the instance is gone, leased or not; a lease of it ends
// RECLAIMED, and its id is returned ("" if it was not leased). No
// "reclaimed" event is written: the backend that reports it knows, has
// nothing to delete, and may catalog a new instance under the name.
func (s *Store) MachineGone(ctx context.Context, backend, hostname string) (string, error) {
	now := s.Now()
	var lease string
	err := s.engine.tx(ctx, func(tx *sql.Tx) error {
		var state, owner string
		lease = ""
		err := s.engine.queryRow(ctx, tx, "SELECT state, backend, COALESCE(lease_id, '') FROM machines WHERE hostname = ?", hostname).Scan(&state, &owner, &lease)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("machine %s: %w", hostname, ErrNotFound)
		case err != nil:
			return err
		case backend != "" && owner != backend:
			return fmt.Errorf("machine %s belongs to backend %s: %w", hostname, owner, ErrNotFound)
		}
		// The lease first, then the machine: the order a release locks
		// them in.
		if lease != "" {
			if _, err := s.engine.exec(ctx, tx, "UPDATE leases SET state = ?, ended_at = ? WHERE id = ? AND state = ?", Reclaimed, nanos(now), lease, Fulfilled); err != nil {
				return err
			}
		}
		res, err := s.engine.exec(ctx, tx, "DELETE FROM machines WHERE hostname = ? AND COALESCE(lease_id, '') = ?", hostname, lease)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return errors.Join(err, fmt.Errorf("machine %s changed meanwhile; report it again: %w", hostname, ErrLeased))
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("store: machine gone: %w", err)
	}
	return lease, nil
}
