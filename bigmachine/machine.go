package bigmachine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/gcefleet/gcefleet/bigmachine/rpc"
)

// State is where a machine is in its life. States only move forward.
type State int

const (
	Unstarted State = iota
	Starting
	Running
	Stopped
)

func (s State) String() string {
	switch s {
	case Unstarted:
		return "Unstarted"
	case Starting:
		return "Starting"
	case Running:
		return "Running"
	case Stopped:
		return "Stopped"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// A Machine is one worker of a B, on which the driver calls methods.
type Machine struct {
	// Addr is the machine's host:port.
	Addr string
	// Maxprocs is how many CPUs the machine's program may use.
	Maxprocs int

	name   string
	b      *B
	handle any // the System's record
	base   string
	client *rpc.Client
	ctx    context.Context // ends when the machine stops
	cancel context.CancelCauseFunc
	kick   chan struct{} // asks the keepalive loop to check now

	mu        sync.Mutex
	state     State
	changed   chan struct{} // closed and replaced on every state change
	err       error
	started   time.Time
	lastAlive time.Time
	stats     Stats
}

func newMachine(b *B, spec Spec) *Machine {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Machine{
		Addr: spec.Addr, Maxprocs: spec.Maxprocs, name: spec.Name, b: b, handle: spec.Handle,
		base: "https://" + spec.Addr, ctx: ctx, cancel: cancel,
		kick: make(chan struct{}, 1), changed: make(chan struct{}), started: time.Now(),
	}
}

// Name is the machine's name, unique in its run.
func (m *Machine) Name() string { return m.name }

// Handle is the System's own record of the machine.
func (m *Machine) Handle() any { return m.handle }

// State returns the machine's current state.
func (m *Machine) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Err returns why the machine stopped or failed to start, or nil.
func (m *Machine) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Wait blocks until the machine reaches state (or a later one) and returns
// the state it is in; ctx ending returns the current state.
func (m *Machine) Wait(ctx context.Context, state State) State {
	for {
		m.mu.Lock()
		s, ch := m.state, m.changed
		m.mu.Unlock()
		if s >= state {
			return s
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return m.State()
		}
	}
}

// setState moves the machine forward to s; moving back is ignored.
func (m *Machine) setState(s State, err error) {
	m.mu.Lock()
	if s <= m.state {
		m.mu.Unlock()
		return
	}
	m.state = s
	if err != nil && m.err == nil {
		m.err = err
	}
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	if s == Stopped {
		cause := err
		if cause == nil {
			cause = errors.New("machine stopped")
		}
		m.cancel(cause)
	}
}

// unavailable is the error of a call to a stopped machine.
func (m *Machine) unavailable(method string) error {
	return &rpc.Error{Kind: rpc.Unavailable, Method: method, Message: "machine " + m.name + " is stopped", Err: m.Err()}
}

// Call calls method ("Service.Method") on the machine with arg and stores
// the result in reply, as rpc.Client.Call does. It waits for the machine to
// be Running, and fails fast with an rpc.Unavailable error once it is
// Stopped, also for calls in flight when it stops.
func (m *Machine) Call(ctx context.Context, method string, arg, reply any) error {
	if m.Wait(ctx, Running) != Running {
		if err := ctx.Err(); err != nil {
			return &rpc.Error{Kind: rpc.Network, Method: method, Err: err}
		}
		return m.unavailable(method)
	}
	return m.call(ctx, method, arg, reply)
}

// call makes a call, even while the machine starts.
func (m *Machine) call(ctx context.Context, method string, arg, reply any) error {
	cctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(m.ctx, func() { cancel(rpc.Unavailable) })
	err := m.client.Call(cctx, m.base, method, arg, reply)
	if err == nil {
		if rc, ok := reply.(*io.ReadCloser); ok {
			// The stream lives until the caller closes it.
			*rc = &streamCloser{ReadCloser: *rc, done: func() { stop(); cancel(nil) }}
			return nil
		}
	}
	stop()
	cancel(nil)
	if err == nil {
		return nil
	}
	if errors.Is(err, rpc.Network) && ctx.Err() == nil && m.State() >= Running {
		// Ask the system at once whether the machine is gone, so that
		// callers learn it now rather than at the keepalive timeout.
		if gone, why := m.b.system.KeepaliveFailed(ctx, m); gone {
			m.fail(fmt.Errorf("machine %s is gone: %w", m.name, why))
		} else {
			m.check()
		}
	}
	if m.ctx.Err() != nil {
		return m.unavailable(method)
	}
	return err
}

type streamCloser struct {
	io.ReadCloser
	done func()
}

func (s *streamCloser) Close() error {
	err := s.ReadCloser.Close()
	s.done()
	return err
}

// RetryCall calls method until it succeeds, fails with an error other than
// a network error, the machine stops, or ctx ends, backing off between
// attempts.
func (m *Machine) RetryCall(ctx context.Context, method string, arg, reply any) error {
	backoff := 10 * time.Millisecond
	for {
		err := m.Call(ctx, method, arg, reply)
		if err == nil || !errors.Is(err, rpc.Network) || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return err
		case <-m.ctx.Done():
			return m.unavailable(method)
		}
		backoff = min(2*backoff, time.Second)
	}
}

// check asks the keepalive loop to look at the machine now.
func (m *Machine) check() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// keepalive renews the machine's keepalive until it stops. Failures are
// tolerated for the system's timeout, unless the system says the machine
// is gone sooner.
func (m *Machine) keepalive() {
	ka := m.b.system.Keepalive()
	ticker := time.NewTicker(ka.Period)
	defer ticker.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-ticker.C:
		case <-m.kick:
		}
		ctx, cancel := context.WithTimeout(m.ctx, max(ka.Period, time.Second))
		var st Stats
		err := m.client.Call(ctx, m.base, "Supervisor.Keepalive", ka.Timeout, &st)
		cancel()
		if err == nil {
			lastOK = time.Now()
			m.mu.Lock()
			m.lastAlive, m.stats = lastOK, st
			m.mu.Unlock()
			continue
		}
		if m.ctx.Err() != nil {
			return
		}
		gone, why := m.b.system.KeepaliveFailed(m.ctx, m)
		switch {
		case gone:
			m.fail(fmt.Errorf("machine %s is gone: %w (keepalive: %v)", m.name, why, err))
			return
		case time.Since(lastOK) > ka.Timeout:
			m.fail(fmt.Errorf("machine %s: no keepalive for %v: %w", m.name, time.Since(lastOK).Round(time.Millisecond), err))
			return
		}
	}
}

// fail stops the machine for err and reports it.
func (m *Machine) fail(err error) {
	m.b.log.Error("machine stopped", "machine", m.name, "err", err)
	m.setState(Stopped, err)
}

// waitInfo asks the machine for its Info until it answers, backing off
// from a few milliseconds: a machine that starts listens soon.
func (m *Machine) waitInfo(ctx context.Context, size int64, ready func(Info) bool) (Info, error) {
	backoff := 2 * time.Millisecond
	for {
		var info Info
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := m.call(cctx, "Supervisor.Info", InfoRequest{Size: size}, &info)
		cancel()
		if err == nil && ready(info) {
			return info, nil
		}
		if err != nil && !errors.Is(err, rpc.Network) {
			return info, err
		}
		if gone, why := m.b.system.KeepaliveFailed(ctx, m); gone {
			return info, why
		}
		select {
		case <-ctx.Done():
			return info, fmt.Errorf("no answer before the start timeout: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// TailOutput copies what machine m's program writes to its output to w,
// over the runtime's own RPC (its supervisor's Tail), until ctx ends or
// the machine goes: a System whose machines run the driver's program and
// have no log of their own to read implements Tail with it.
func TailOutput(ctx context.Context, m *Machine, w io.Writer) error {
	var rc io.ReadCloser
	if err := m.Call(ctx, "Supervisor.Tail", int64(0), &rc); err != nil {
		if ctx.Err() != nil || errors.Is(err, rpc.Unavailable) {
			return nil
		}
		return err
	}
	defer rc.Close()
	_, err := io.Copy(w, rc)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
