package provider

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/gcefleet/gcefleet/provider/api"
)

func (s *Server) requestLease(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	var req api.LeaseRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	now := time.Now()
	fields := map[string]string{}
	if req.RequestID == "" || textProblem(req.RequestID, maxRequestID) != "" {
		fields["request_id"] = fmt.Sprintf("1 to %d printable characters that make the request idempotent (a UUID, say)", maxRequestID)
	}
	checkDims(fields, "dimensions", req.Dimensions, true)
	s.checkPoolRequest(fields, req.Dimensions)
	n := 0
	for _, vs := range req.Dimensions {
		n += len(vs)
	}
	if n > maxRequestValues && fields["dimensions"] == "" {
		fields["dimensions"] = fmt.Sprintf("%d values in all: a request asks for at most %d (a machine may have more)", n, maxRequestValues)
	}
	maps.Copy(fields, req.Validate(now))
	if slices.Contains(req.Dimensions[PoolDimension], "true") && req.Term.Indefinite && fields["term"] == "" {
		// Its claim, without which nobody can use the machine, names
		// the lease's expiry.
		fields["term"] = "a pool machine (gceboot=true) is leased for a term (duration or expires_at), not indefinitely: its claim names the lease's expiry"
	}
	if len(fields) > 0 {
		return invalid(fields)
	}
	if err := s.satisfiable(r.Context(), req.Dimensions); err != nil {
		// A repeat of a request made when it could be satisfied answers
		// as the first did.
		if again, lerr := s.st.Requested(r.Context(), p.Name, req.RequestID); lerr != nil || !again {
			if ae := (*apiError)(nil); errors.As(err, &ae) && ae.Code == "unsatisfiable" {
				s.m.outcomes.WithLabelValues("unsatisfiable").Inc()
			}
			return err
		}
	}
	l, created, err := s.st.RequestLease(r.Context(), p.Name, req)
	if err != nil {
		return err
	}
	if created {
		// A new lease: no poll waits on it yet, but a lease fulfilled at
		// once wrote an event.
		if l.State == api.Fulfilled {
			s.m.outcomes.WithLabelValues("fulfilled_at_once").Inc()
			s.due(l.ExpiresAt)
			s.leased(l)
		} else {
			s.m.outcomes.WithLabelValues("queued").Inc()
			s.demandChanged()
			s.due(l.Request.Deadline)
		}
	}
	return s.writeLease(w, r, l)
}

// owned returns lease id if p may see it.
func (s *Server) owned(ctx context.Context, p Principal, id string) (api.Lease, error) {
	l, err := s.st.Lease(ctx, id)
	if err != nil {
		return l, err
	}
	if p.Role != Admin && l.Client != p.Name {
		return l, fmt.Errorf("lease %s: %w", id, api.ErrNotFound)
	}
	return l, nil
}

// getLease answers with a lease. With ?wait=, a lease in the state
// ?while= names (PENDING if not given; FULFILLED to watch a lease end) is
// answered when it leaves that state or the wait passes.
func (s *Server) getLease(w http.ResponseWriter, r *http.Request, p Principal) error {
	q, err := query(r, "wait", "while")
	if err != nil {
		return err
	}
	if _, err := queryWait(q); err != nil {
		return err
	}
	id := r.PathValue("id")
	if err := checkID(id); err != nil {
		return err
	}
	while := api.Pending
	switch v := q.Get("while"); v {
	case "", api.Pending:
	case api.Fulfilled:
		while = v
	default:
		return invalid(map[string]string{"query.while": "PENDING (the default: wait for fulfilment) or FULFILLED (wait for the lease to end)"})
	}
	var l api.Lease
	err = s.longPoll(r, &poll{lease: id, while: while}, func(got *api.Lease) (bool, error) {
		if got != nil {
			// The change's value: the first look, a read, found the lease
			// p's, and a lease's client does not change.
			l = *got
			return true, nil
		}
		var err error
		l, err = s.owned(r.Context(), p, id)
		return err != nil || l.State != while, err
	})
	if err != nil {
		return err
	}
	if l.State == api.Pending {
		if l.QueuePosition, l.QueueLength, err = s.st.QueuePosition(r.Context(), l.ID); err != nil {
			return err
		}
	}
	return s.writeLease(w, r, l)
}

func (s *Server) listLeases(w http.ResponseWriter, r *http.Request, p Principal) error {
	q, err := query(r, "client", "active")
	if err != nil {
		return err
	}
	active, err := queryBool(q, "active")
	if err != nil {
		return err
	}
	client := p.Name
	if p.Role == Admin {
		client = q.Get("client")
	}
	ls, err := s.st.Leases(r.Context(), client, active)
	if err != nil {
		return err
	}
	for i := range ls {
		if ls[i], err = s.withClaim(r.Context(), ls[i]); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"leases": nonNil(ls)})
}

func (s *Server) extendLease(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	if err := checkID(r.PathValue("id")); err != nil {
		return err
	}
	var body struct {
		Term api.Term `json:"term"`
	}
	if err := readJSON(r, &body); err != nil {
		return err
	}
	if err := body.Term.Validate(time.Now()); err != nil {
		return invalid(map[string]string{"term": err.Error()})
	}
	client := p.Name
	if p.Role == Admin {
		client = ""
	}
	l, err := s.st.ExtendLease(r.Context(), client, r.PathValue("id"), body.Term)
	if err != nil {
		return err
	}
	s.due(l.ExpiresAt)
	s.leaseChanged(l)
	return s.writeLease(w, r, l)
}

func (s *Server) releaseLease(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	if err := checkID(r.PathValue("id")); err != nil {
		return err
	}
	client := p.Name
	if p.Role == Admin {
		client = ""
	}
	l, ended, err := s.st.ReleaseLease(r.Context(), client, r.PathValue("id"))
	if err != nil {
		return err
	}
	if ended {
		s.m.outcomes.WithLabelValues("released").Inc()
		s.leaseChanged(l)
		if l.Machine != nil {
			s.eventsAdded(l.Machine.Backend) // "reclaimed"
		} else {
			s.demandChanged() // a withdrawn request
		}
	}
	return s.writeLease(w, r, l)
}
