package gce

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/identity"
)

// Enroll has machine m prove that it is the instance this run made, and
// hands it its certificate: it fetches the proof the machine's gceboot
// serves (a certificate request for the key it made, and its identity
// token for the run's nonce and that key), checks the token against
// Google's published keys (the emulator's, on the emulator) and the
// instance's project, zone, id and name, and signs the request with the
// run's CA. No Compute call is made, and no key leaves the machine.
func (s *System) Enroll(ctx context.Context, m *bigmachine.Machine) error {
	h, ok := m.Handle().(*Machine)
	if !ok || h.sign == nil {
		return errors.New("gce: the machine was not made by this system")
	}
	e := &identity.Enroller{HTTP: identity.EnrollClient()}
	defer e.HTTP.CloseIdleConnections()
	want := identity.Instance{ProjectID: s.cfg.Project, Zone: h.Zone, ID: h.id, Name: h.Name}
	backoff := 2 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		p, err := e.Proof(cctx, m.Addr)
		cancel()
		if err == nil {
			csr, verr := s.verifier.VerifyProof(ctx, p, want, s.nonce)
			if verr == nil {
				cert, err := h.sign(h.Name, csr.PublicKey)
				if err != nil {
					return fmt.Errorf("signing the certificate of %s: %w", h.Name, err)
				}
				return e.Deliver(ctx, m.Addr, cert)
			}
			// A refused proof is final; failing to fetch Google's keys
			// is not, and is tried again.
			err = verr
		}
		if errors.Is(err, identity.ErrRefused) {
			return fmt.Errorf("instance %s: %w", h.Name, err)
		}
		// A machine boots for a while before it answers; one that is
		// gone never will.
		if gone, why := s.KeepaliveFailed(ctx, m); gone {
			return why
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no verified proof of identity from %s before the start timeout: %w", m.Addr, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

var _ bigmachine.Enroller = (*System)(nil)
