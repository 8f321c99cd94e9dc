// Package netcap caps the connections an HTTP server keeps open, below
// the process's descriptor limit, without letting idle connections lock
// out clients that send requests: at the cap, a new connection closes
// the connection that has been idle longest (a keep-alive one between
// requests, or one that has sent nothing yet) rather than being refused.
//
// It imports nothing but the standard library, so that the Compute
// Engine emulator, which imports nothing of gcefleet's product, shares
// it with the Machine Provider.
package netcap

import (
	"container/list"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
)

// Pool is a budget of connections shared by the listeners made with its
// Listen: at most Max open across them all.
type Pool struct {
	max int

	mu    sync.Mutex
	open  map[*conn]struct{}
	idle  *list.List // of *conn, the longest idle at the front
	evict int        // connections closed to make room
}

// NewPool returns a budget of max connections.
func NewPool(max int) *Pool {
	return &Pool{max: max, open: map[*conn]struct{}{}, idle: list.New()}
}

// Listener is a net.Listener whose connections count against a Pool. It
// learns which connections are idle from an http.Server's ConnState, so
// it must serve one server, hooked up with Track.
type Listener struct {
	net.Listener
	p *Pool
}

// Listen wraps ln so that it keeps at most max connections open.
func Listen(ln net.Listener, max int) *Listener { return NewPool(max).Listen(ln) }

// Listen wraps ln so that its connections count against p.
func (p *Pool) Listen(ln net.Listener) *Listener { return &Listener{Listener: ln, p: p} }

// Track hooks l into srv's connection states, keeping the ConnState srv
// had, and returns srv.
func (l *Listener) Track(srv *http.Server) *http.Server {
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		l.p.state(c, s)
		if prev != nil {
			prev(c, s)
		}
	}
	return srv
}

// Open returns how many connections are open.
func (p *Pool) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.open)
}

// Evicted returns how many idle connections were closed to make room.
func (p *Pool) Evicted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.evict
}

// Idle returns how many of the pool's connections are between requests.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.idle.Len()
}

// Pool returns the budget l's connections count against.
func (l *Listener) Pool() *Pool { return l.p }

// Accept waits for a connection; at the cap it first closes the one idle
// longest, and when none is idle (every connection is in a request) it
// refuses the new one and waits for another.
func (l *Listener) Accept() (net.Conn, error) {
	p := l.p
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c := &conn{Conn: nc, p: p}
		var victim *conn
		p.mu.Lock()
		if len(p.open) >= p.max {
			if front := p.idle.Front(); front != nil {
				victim = front.Value.(*conn)
				p.forget(victim)
				p.evict++
			}
		}
		full := len(p.open) >= p.max
		if !full {
			p.open[c] = struct{}{}
			c.idle = p.idle.PushBack(c) // idle until its first request
		}
		p.mu.Unlock()
		if victim != nil {
			victim.Conn.Close()
		}
		if full {
			nc.Close()
			continue
		}
		return c, nil
	}
}

// state follows a connection of a server through its states: between
// requests (and before its first) it is idle, and a candidate to close.
func (p *Pool) state(nc net.Conn, s http.ConnState) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, ok := nc.(*conn)
	if !ok || c.p != p {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, open := p.open[c]; !open {
		return
	}
	switch s {
	case http.StateActive:
		if c.idle != nil {
			p.idle.Remove(c.idle)
			c.idle = nil
		}
	case http.StateIdle:
		if c.idle == nil {
			c.idle = p.idle.PushBack(c)
		}
	case http.StateHijacked, http.StateClosed:
		p.forget(c)
	}
}

// forget drops c from p's books. p.mu is held.
func (p *Pool) forget(c *conn) {
	if c.idle != nil {
		p.idle.Remove(c.idle)
		c.idle = nil
	}
	delete(p.open, c)
}

type conn struct {
	net.Conn
	p    *Pool
	idle *list.Element // in p.idle while idle; guarded by p.mu
}

func (c *conn) Close() error {
	c.p.mu.Lock()
	c.p.forget(c)
	c.p.mu.Unlock()
	return c.Conn.Close()
}

// Headroom is how many descriptors DefaultMax leaves to the rest of the
// process (database files and connections, outgoing calls, pipes): an
// eighth of the limit, and at least 64.
func Headroom(limit int) int { return max(64, limit/8) }

// DefaultMax returns a cap on connections for a process whose descriptor
// limit is its current RLIMIT_NOFILE: the limit less Headroom, at least 16.
// Where the limit cannot be read, it is taken to be 4,096.
func DefaultMax() int {
	limit := descriptorLimit()
	return max(16, limit-Headroom(limit))
}
