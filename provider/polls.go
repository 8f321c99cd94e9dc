package provider

import (
	"net/http"
	"sync"
	"time"

	"github.com/gcefleet/gcefleet/provider/api"
)

// polls are the long polls waiting, by what wakes them: a change of
// their lease, or new events of their backend. A change wakes only the
// polls that wait for it (with thousands waiting, waking all for each
// change made each re-read its lease, most for nothing).
type polls struct {
	mu     sync.Mutex
	leases map[string]map[*poll]struct{} // by lease id
	events map[*poll]struct{}
	demand map[*poll]struct{}
	n      int // polls waiting
}

// poll is one long poll waiting.
type poll struct {
	lease   string // the lease it waits on, or "" for events or demand
	demand  bool   // it waits for a change of the queue (GET /v1/demand)
	while   string // a lease poll waits while its lease is in this state
	backend string // an event poll reads this backend's events ("" all)

	wake chan struct{} // 1-buffered: a change happened (got or stale)

	mu    sync.Mutex
	got   *api.Lease // the lease as a change left it, out of while
	stale bool       // something changed that only a read tells
}

// watch registers p, before its first look, so that no change after that
// look goes unseen; the func it returns unregisters it.
func (s *Server) watch(p *poll) func() {
	p.wake = make(chan struct{}, 1)
	ps := &s.polls
	ps.mu.Lock()
	ps.n++
	switch {
	case p.demand:
		ps.demand[p] = struct{}{}
	case p.lease == "":
		ps.events[p] = struct{}{}
	default:
		if ps.leases[p.lease] == nil {
			ps.leases[p.lease] = map[*poll]struct{}{}
		}
		ps.leases[p.lease][p] = struct{}{}
	}
	ps.mu.Unlock()
	return func() {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		ps.n--
		switch {
		case p.demand:
			delete(ps.demand, p)
			return
		case p.lease == "":
			delete(ps.events, p)
			return
		}
		delete(ps.leases[p.lease], p)
		if len(ps.leases[p.lease]) == 0 {
			delete(ps.leases, p.lease)
		}
	}
}

// tell wakes p with l, the lease as a change left it, or, with l nil, to
// read again.
func (p *poll) tell(l *api.Lease) {
	p.mu.Lock()
	switch {
	case l == nil:
		p.stale = true
	case l.State == p.while:
		// Not what it waits for (an extension of a lease watched for its
		// end): nothing to do.
		p.mu.Unlock()
		return
	case p.got == nil:
		p.got = l
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// taken returns and clears what p was told.
func (p *poll) taken() (got *api.Lease, stale bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	got, stale = p.got, p.stale
	p.got, p.stale = nil, false
	return got, stale
}

// leaseChanged wakes the polls of lease l.ID with its new value: they
// answer with it, without reading it again.
func (s *Server) leaseChanged(l api.Lease) {
	s.polls.mu.Lock()
	defer s.polls.mu.Unlock()
	for p := range s.polls.leases[l.ID] {
		p.tell(&l)
	}
}

// leaseTouched wakes the polls of lease id to read it again: it changed,
// in a way this server does not know the result of.
func (s *Server) leaseTouched(id string) {
	s.polls.mu.Lock()
	defer s.polls.mu.Unlock()
	for p := range s.polls.leases[id] {
		p.tell(nil)
	}
}

// eventsAdded wakes the event polls of backend (all for "").
func (s *Server) eventsAdded(backend string) {
	s.polls.mu.Lock()
	defer s.polls.mu.Unlock()
	for p := range s.polls.events {
		if backend == "" || p.backend == "" || p.backend == backend {
			p.tell(nil)
		}
	}
}

// notify wakes every poll to read again: anything may have changed.
func (s *Server) notify() {
	s.polls.mu.Lock()
	defer s.polls.mu.Unlock()
	for _, ps := range s.polls.leases {
		for p := range ps {
			p.tell(nil)
		}
	}
	for p := range s.polls.events {
		p.tell(nil)
	}
	for p := range s.polls.demand {
		p.tell(nil)
	}
}

// demandChanged wakes the demand polls: a request was queued or left
// the queue.
func (s *Server) demandChanged() {
	s.polls.mu.Lock()
	defer s.polls.mu.Unlock()
	for p := range s.polls.demand {
		p.tell(nil)
	}
}

// leased wakes the polls that lease l's fulfilment answers: its own
// and its machine's backend's event feed (a "leased" event).
func (s *Server) leased(l api.Lease) {
	s.leaseChanged(l)
	if l.Machine != nil {
		s.eventsAdded(l.Machine.Backend)
	}
}

// StopPolls answers every waiting long poll at once with what it has, as
// when the server shuts down; later polls answer without waiting.
func (s *Server) StopPolls() {
	s.stoppingOnce.Do(func() { close(s.stopping) })
}

// longPoll calls ready until it says the answer is ready, the request's
// ?wait= passes, or the request ends: first with nil (ready reads what it
// needs), then each time a change wakes p, with the lease as the change
// left it when this server knows that (ready answers with it) or nil
// (ready reads again). Changes that are not p's do not wake it. While
// other replicas' changes go unheard (see follow), it reads again every
// second.
func (s *Server) longPoll(r *http.Request, p *poll, ready func(got *api.Lease) (bool, error)) error {
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > 5*time.Minute {
			return invalid(map[string]string{"query.wait": "a duration up to 5m, such as 30s"})
		}
		wait = d
	}
	deadline := time.Now().Add(wait)
	if wait > 0 {
		defer s.watch(p)()
	}
	var got *api.Lease
	for look := true; ; {
		if look {
			done, err := ready(got)
			if err != nil || done {
				return err
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		recheck := left
		if !s.hearing.Load() {
			recheck = min(left, time.Second)
		}
		t := time.NewTimer(recheck)
		select {
		case <-p.wake:
			var stale bool
			got, stale = p.taken()
			switch look = got != nil || stale; {
			case got != nil:
				s.m.wakeups.WithLabelValues("change").Inc()
			case stale:
				s.m.wakeups.WithLabelValues("read").Inc()
			}
		case <-t.C:
			got, look = nil, true
		case <-r.Context().Done():
			t.Stop()
			return r.Context().Err()
		case <-s.stopping:
			// The server is shutting down: answer with what is, now.
			t.Stop()
			_, err := ready(nil)
			return err
		}
		t.Stop()
	}
}
