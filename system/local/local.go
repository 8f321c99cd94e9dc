// Package local is the bigmachine System whose machines are child
// processes of the driver on 127.0.0.1, each with its own port. It is the
// default system: nothing to configure, and a fast way to test a program
// before it goes to Compute Engine.
package local

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
)

// listenerEnv names the inherited file descriptor a machine serves on. The
// driver binds each machine's port before starting it, so the machine is
// reachable at once, and the socket outlives a bootstrap's exec.
const listenerEnv = "GCEFLEET_LOCAL_LISTENER_FD"

// System starts machines as child processes. Its zero value is not usable;
// call New.
type System struct {
	keepalive bigmachine.Keepalive
	bootstrap string

	mu     sync.Mutex
	serial int
	procs  []*proc
}

// An Option configures New.
type Option func(*System)

// WithKeepalive sets how often the driver renews a machine's keepalive and
// how long a machine lives without one (default every second, 5 seconds).
func WithKeepalive(period, timeout time.Duration) Option {
	return func(s *System) { s.keepalive = bigmachine.Keepalive{Period: period, Timeout: timeout} }
}

// WithBootstrap starts machines from the bootstrap program at path (such as
// a build of cmd/gceboot) instead of the driver's own binary, so that the
// driver ships its binary to them as it does to cloud machines.
func WithBootstrap(path string) Option { return func(s *System) { s.bootstrap = path } }

// New returns a local system.
func New(opts ...Option) *System {
	s := &System{keepalive: bigmachine.Keepalive{Period: time.Second, Timeout: 5 * time.Second}}
	for _, o := range opts {
		o(s)
	}
	return s
}

// proc is one machine's process.
type proc struct {
	cmd *exec.Cmd
	out *os.File // read end of the process's stdout and stderr
	// tailed is closed when Tail has copied the last of the output.
	tailed chan struct{}
	done   chan struct{}
	err    error // how the process ended, once done is closed
}

// Name returns "local".
func (s *System) Name() string { return "local" }

// Keepalive returns the system's keepalive timing.
func (s *System) Keepalive() bigmachine.Keepalive { return s.keepalive }

// Start starts req.N child processes, each listening on its own port.
func (s *System) Start(ctx context.Context, req bigmachine.StartRequest) ([]bigmachine.Spec, error) {
	maxprocs := max(1, runtime.NumCPU()/req.N)
	var specs []bigmachine.Spec
	for range req.N {
		spec, err := s.start(req, maxprocs)
		if err != nil {
			return specs, err
		}
		specs = append(specs, spec)
	}
	return specs, nil
}

func (s *System) start(req bigmachine.StartRequest, maxprocs int) (bigmachine.Spec, error) {
	s.mu.Lock()
	s.serial++
	name := fmt.Sprintf("local-%d-%d", os.Getpid(), s.serial)
	s.mu.Unlock()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return bigmachine.Spec{}, fmt.Errorf("binding a port for %s: %w", name, err)
	}
	addr := ln.Addr().String()
	lnFile, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		return bigmachine.Spec{}, err
	}
	defer lnFile.Close()
	cfg, err := req.Config(name, addr)
	if err != nil {
		return bigmachine.Spec{}, err
	}
	path, args := req.Binary, req.Args
	if s.bootstrap != "" {
		path, args = s.bootstrap, nil
	} else {
		cfg.Digest = req.Digest
	}
	// The configuration, with the machine's key, goes through a pipe the
	// process inherits as descriptor 4: the environment names only that.
	cfgPipe, err := cfg.Pipe()
	if err != nil {
		return bigmachine.Spec{}, err
	}
	defer cfgPipe.Close()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), req.Env...)
	cmd.Env = append(cmd.Env,
		bigmachine.EnvConfig+"=4",
		listenerEnv+"=3",
		fmt.Sprintf("GOMAXPROCS=%d", maxprocs),
	)
	cmd.ExtraFiles = []*os.File{lnFile, cfgPipe}
	r, w, err := os.Pipe()
	if err != nil {
		return bigmachine.Spec{}, err
	}
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return bigmachine.Spec{}, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{cmd: cmd, out: r, done: make(chan struct{}), tailed: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if p.err == nil {
			p.err = errors.New("exited with status 0")
		}
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return bigmachine.Spec{Name: name, Addr: addr, Maxprocs: maxprocs, Handle: p}, nil
}

// KeepaliveFailed reports a machine whose process has exited as gone. A
// process that died closes its connections a moment before its parent can
// reap it, so the check waits that moment.
func (s *System) KeepaliveFailed(ctx context.Context, m *bigmachine.Machine) (bool, error) {
	p, ok := m.Handle().(*proc)
	if !ok {
		return false, nil
	}
	t := time.NewTimer(reapWait)
	defer t.Stop()
	select {
	case <-p.done:
		return true, fmt.Errorf("process %d %v", p.cmd.Process.Pid, p.err)
	case <-t.C:
	case <-ctx.Done():
	}
	return false, nil
}

// reapWait is how long a failed call waits to learn whether the process
// died: long enough for the kernel to finish tearing it down.
const reapWait = 100 * time.Millisecond

// Tail copies the machine process's output to w until the process ends.
func (s *System) Tail(ctx context.Context, m *bigmachine.Machine, w io.Writer) error {
	p, ok := m.Handle().(*proc)
	if !ok {
		return nil
	}
	defer close(p.tailed)
	_, err := io.Copy(w, p.out)
	p.out.Close()
	if errors.Is(err, os.ErrClosed) {
		err = nil
	}
	return err
}

// HTTPClient returns an HTTP/2 client with cfg.
func (s *System) HTTPClient(cfg *tls.Config) *http.Client { return rpc.HTTPClient(cfg) }

// Listen serves on the socket the driver bound for the machine, or binds
// addr if there is none.
func (s *System) Listen(addr string) (net.Listener, error) {
	if os.Getenv(listenerEnv) == "3" {
		// Serve on a duplicate and leave descriptor 3 itself alone (an
		// *os.File for it would close it when collected), so that a
		// program this one execs inherits the same listening socket.
		fd, err := syscall.Dup(3)
		if err != nil {
			return nil, fmt.Errorf("inherited listener: %w", err)
		}
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "listener")
		defer f.Close()
		return net.FileListener(f)
	}
	return net.Listen("tcp", addr)
}

// Exit exits the process.
func (s *System) Exit(code int) { os.Exit(code) }

// Shutdown waits for the machines' processes to exit, and kills those that
// have not when ctx ends or after a grace of two seconds. It returns once
// their output has been copied, so no last line is lost.
func (s *System) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-ctx.Done():
			p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
		select {
		case <-p.tailed:
		case <-ctx.Done():
		}
	}
	return nil
}

var _ bigmachine.System = (*System)(nil)
