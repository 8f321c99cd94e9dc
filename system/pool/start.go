package pool

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/provider/client"
)

// pollEvery bounds one long poll of a pending lease: the provider answers
// at once when the lease changes.
const pollEvery = 20 * time.Second

// Start leases req.N machines, with request ids RUN-0001, RUN-0002, ...,
// waits for the provider to fulfil the leases (by long poll, up to the
// start timeout), and claims each machine as soon as its lease is
// fulfilled. It returns the machines claimed; if some are not, an error
// that says why: requests still waiting for a machine, denied, refused,
// or a machine that could not be claimed. Leases that gave no machine are
// released.
func (s *System) Start(ctx context.Context, req bigmachine.StartRequest) ([]bigmachine.Spec, error) {
	if err := s.cfg.Validate(); err != nil {
		return nil, err
	}
	c, err := s.Client()
	if err != nil {
		return nil, err
	}
	if req.N <= 0 {
		return nil, nil
	}
	now := time.Now()
	wait := s.cfg.StartTimeout
	if wait == 0 {
		wait = 90 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			wait = dl.Sub(now) * 3 / 4
		}
	}
	if dl, ok := ctx.Deadline(); ok && now.Add(wait).After(dl) {
		wait = dl.Sub(now)
	}
	if wait < time.Second {
		return nil, fmt.Errorf("pool: %v is too little time to lease machines; give bigmachine a longer start timeout", wait)
	}

	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil, errors.New("pool: Start after Shutdown")
	}
	first := s.next + 1
	s.next += req.N
	if s.stop == nil {
		s.stop = make(chan struct{})
		s.extender.Add(1)
		go s.extend(s.stop)
	}
	s.mu.Unlock()

	dims := s.cfg.leaseDimensions()
	deadline := now.Add(wait)
	// The provider's deadline is the wait's, so that what is still
	// pending when Start gives up is denied even if its release is lost.
	// It is made once: a request retried is the same request.
	lr := api.LeaseRequest{Dimensions: dims, Term: api.Term{Duration: s.cfg.Lease}, Deadline: deadline.Add(time.Second).Truncate(time.Second)}
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	results := make([]result, req.N)
	var wg, settled sync.WaitGroup
	settled.Add(req.N)
	for i := range req.N {
		wg.Go(func() {
			r := lr
			r.RequestID = fmt.Sprintf("%s-%04d", s.run, first+i)
			results[i] = s.startOne(ctx, wctx, c, r, req, &settled)
		})
	}
	wg.Wait()

	var out []bigmachine.Spec
	for _, r := range results {
		if r.spec != nil {
			out = append(out, *r.spec)
		}
	}
	if len(out) < req.N {
		return out, fmt.Errorf("pool: %d of %d machines leased and claimed: %s", len(out), req.N, explain(results, dims, wait))
	}
	return out, nil
}

// result is what became of one lease request.
type result struct {
	spec    *bigmachine.Spec
	request string // the request's id
	lease   string // the lease's id, once it has one
	waiting bool   // still pending when Start gave up
	err     error  // why it gave no machine
}

// startOne requests one lease, waits for it within wctx, and claims its
// machine within ctx.
//
// It claims the machine only once every request of the Start has settled
// (settled.Wait): a claimed machine waits only so long for the driver's
// first keepalive, which bigmachine sends once Start returns, so a
// machine claimed early would die while a slow lease still waits. Until
// then the lease holds the machine, extended as any other.
func (s *System) startOne(ctx, wctx context.Context, c *client.Client, r api.LeaseRequest, req bigmachine.StartRequest, settled *sync.WaitGroup) result {
	var once sync.Once
	settle := func() { once.Do(settled.Done) }
	defer settle()
	var l api.Lease
	err := retry(wctx, func() error {
		var err error
		l, err = c.RequestLease(wctx, r)
		if errors.Is(err, api.ErrRequestIDReuse) {
			// A Start of this run made this request before, with another
			// deadline: it is the same request, and its lease is ours.
			l, err = s.findRequest(wctx, c, r.RequestID)
		}
		return err
	})
	if err != nil {
		if wctx.Err() != nil && ctx.Err() == nil {
			return result{request: r.RequestID, waiting: true, err: fmt.Errorf("the provider did not take it: %w", err)}
		}
		return result{request: r.RequestID, err: err}
	}
	h := s.track(l)
	res := result{request: r.RequestID, lease: l.ID}
	for l.State == api.Pending {
		w := min(time.Until(r.Deadline), pollEvery)
		if w <= 0 {
			break
		}
		var got api.Lease
		err := retry(wctx, func() error {
			var err error
			got, err = c.Lease(wctx, l.ID, w)
			return err
		})
		if err != nil {
			break
		}
		l = got
	}
	bg := context.WithoutCancel(ctx)
	rctx, rcancel := context.WithTimeout(bg, 10*time.Second)
	defer rcancel()
	giveUp := func(why error) result {
		if err := s.release(rctx, c, h, why); err != nil {
			why = fmt.Errorf("%w (and %v)", why, err)
		}
		res.err = why
		return res
	}
	switch {
	case l.State == api.Pending:
		res.waiting = true
		return giveUp(errors.New("still waiting for a machine"))
	case l.State != api.Fulfilled:
		return giveUp(fmt.Errorf("lease %s is %s", l.ID, l.State))
	case l.Claim == "":
		return giveUp(fmt.Errorf("lease %s: machine %s is not a pool machine (its lease carries no claim); lease machines with %s=true", l.ID, l.Hostname, PoolDimension))
	case l.Machine == nil:
		return giveUp(fmt.Errorf("lease %s: the provider said nothing of machine %s", l.ID, l.Hostname))
	case s.cfg.Backend != "" && l.Machine.Backend != s.cfg.Backend:
		return giveUp(fmt.Errorf("lease %s: machine %s is backend %s's, and -pool.backend trusts only %s's; not claimed", l.ID, l.Hostname, l.Machine.Backend, s.cfg.Backend))
	}
	h.mu.Lock()
	h.host, h.expires, h.claim = l.Hostname, l.ExpiresAt, l.Claim
	h.mu.Unlock()
	settle()
	settled.Wait()
	// An extension while the others waited made a new claim, with the
	// lease's new expiry.
	h.mu.Lock()
	token, ended := h.claim, h.ended
	h.mu.Unlock()
	if ended != nil {
		res.err = ended
		return res
	}
	sess, err := s.present(ctx, l.Machine.Connection, l.Hostname, token, req.CA, func(pub crypto.PublicKey) ([]byte, error) {
		return req.Sign(l.Hostname, pub)
	})
	if err != nil {
		return giveUp(fmt.Errorf("claiming machine %s of lease %s: %w", l.Hostname, l.ID, err))
	}
	h.mu.Lock()
	h.conn, h.control, h.delivered = l.Machine.Connection, sess.Control, token
	h.mu.Unlock()
	// An extension while the machine was being claimed made a claim it
	// has not seen.
	s.deliver(ctx, h)
	res.spec = &bigmachine.Spec{Name: l.Hostname, Addr: sess.Addr, Maxprocs: cpus(l.Machine), Handle: h}
	return res
}

// findRequest returns the caller's active lease of request id.
func (s *System) findRequest(ctx context.Context, c *client.Client, id string) (api.Lease, error) {
	ls, err := c.Leases(ctx, true)
	if err != nil {
		return api.Lease{}, err
	}
	for _, l := range ls {
		if l.Request.RequestID == id {
			return l, nil
		}
	}
	return api.Lease{}, fmt.Errorf("request id %s was used by this client, for a lease that has ended: give the run another name", id)
}

// track records lease l as the system's.
func (s *System) track(l api.Lease) *Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h, ok := s.leases[l.ID]; ok {
		return h
	}
	h := &Lease{ID: l.ID, host: l.Hostname, expires: l.ExpiresAt}
	s.leases[l.ID] = h
	return h
}

// explain says why the requests of results that gave no machine did not:
// those still waiting together, the rest each (a few of them).
func explain(results []result, dims api.Dimensions, wait time.Duration) string {
	var waiting []string
	// The other failures, the same one of several requests told once.
	var others []string
	byMsg := map[string][]string{}
	for _, r := range results {
		switch {
		case r.spec != nil:
		case r.waiting && r.lease != "":
			waiting = append(waiting, r.lease)
		default:
			msg := r.err.Error()
			if r.lease != "" {
				// It names its lease.
				others = append(others, msg)
				continue
			}
			if byMsg[msg] == nil {
				others = append(others, msg)
			}
			byMsg[msg] = append(byMsg[msg], r.request)
		}
	}
	for i, msg := range others {
		ids := byMsg[msg]
		switch len(ids) {
		case 0:
		case 1:
			others[i] = "request " + ids[0] + ": " + msg
		default:
			others[i] = fmt.Sprintf("requests %s and %d more: %s", ids[0], len(ids)-1, msg)
		}
	}
	var parts []string
	if len(waiting) > 0 {
		sort.Strings(waiting)
		shown := waiting[:min(len(waiting), 4)]
		more := ""
		if len(waiting) > len(shown) {
			more = fmt.Sprintf(" and %d more", len(waiting)-len(shown))
		}
		parts = append(parts, fmt.Sprintf("%d requests still waiting after %v for a machine with %s (leases %s%s, released): the fleet has no free machine of these dimensions yet: grow the group of a gceboot template that has them (if none has, none will come: check -pool.dim), or give the machines longer (-start-timeout)",
			len(waiting), wait.Round(time.Millisecond), dimString(dims), strings.Join(shown, ", "), more))
	}
	const maxShown = 3
	for i, o := range others {
		if i == maxShown {
			parts = append(parts, fmt.Sprintf("and %d more", len(others)-maxShown))
			break
		}
		parts = append(parts, o)
	}
	return strings.Join(parts, "; ")
}

// extend extends every fulfilled lease every third of its term until stop
// is closed: the leases are the machines' keepalive to the fleet.
func (s *System) extend(stop chan struct{}) {
	defer s.extender.Done()
	t := time.NewTicker(s.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s.extendAll(stop)
	}
}

func (s *System) extendAll(stop chan struct{}) {
	s.mu.Lock()
	c := s.client
	var ls []*Lease
	for _, l := range s.leases {
		l.mu.Lock()
		live := l.ended == nil && !l.expires.IsZero()
		l.mu.Unlock()
		if live {
			ls = append(ls, l)
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Lease/3)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, h := range ls {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			var l api.Lease
			err := retry(ctx, func() error {
				var err error
				l, err = c.Extend(ctx, h.ID, api.Term{Duration: s.cfg.Lease})
				return err
			})
			switch {
			case errors.Is(err, api.ErrNotActive) || errors.Is(err, api.ErrNotFound):
				why := fmt.Errorf("lease %s of %s ended: %w", h.ID, h.Host(), err)
				h.end(why)
				s.log.Error("a machine's lease ended behind the driver's back: the machine is no longer the run's", "lease", h.ID, "machine", h.Host(), "err", err)
			case err != nil:
				if ctx.Err() == nil || !isStopped(stop) {
					s.log.Warn("extending a lease; trying again", "lease", h.ID, "machine", h.Host(), "err", err)
				}
			default:
				h.mu.Lock()
				h.expires = l.ExpiresAt
				if l.Claim != "" {
					h.claim = l.Claim
				}
				h.mu.Unlock()
				s.deliver(ctx, h)
			}
		})
	}
	wg.Wait()
}

// renewTimeout bounds one delivery of a claim to a machine.
const renewTimeout = 10 * time.Second

// deliver hands the claimed machine of h the lease's latest claim, unless
// it has it: a machine ends its run when the claim it holds expires, so
// each extension must reach it. A failure is logged; the next extension
// tries again, a third of the term later, well before the machine's
// claim (a whole term) expires.
func (s *System) deliver(ctx context.Context, h *Lease) {
	h.mu.Lock()
	conn, control, host, token, have := h.conn, h.control, h.host, h.claim, h.delivered
	h.mu.Unlock()
	if control == "" || token == "" || token == have {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), renewTimeout)
	defer cancel()
	if err := s.renew(ctx, conn, control, host, token); err != nil {
		s.log.Warn("handing a machine its lease's renewed claim; the machine ends the run when the claim it holds expires", "lease", h.ID, "machine", host, "err", err)
		return
	}
	h.mu.Lock()
	h.delivered = token
	h.mu.Unlock()
}

func isStopped(stop chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}
