package bigmachine

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// BootOptions are how a bootstrap runs the driver's program.
type BootOptions struct {
	// Supervise runs the uploaded program as a child of the bootstrap
	// instead of replacing the bootstrap with it (exec), so that the
	// bootstrap outlives the program and can end it: a pool machine
	// whose lease ends must cut its old lessee off from everything on
	// the machine, and the lessee's own program cannot be trusted to do
	// that. On Linux the bootstrap becomes a child subreaper, so that
	// every descendant of the program stays its descendant; when the
	// bootstrap runs as root the program runs as RunUID:RunGID, so that
	// it cannot signal or trace its supervisor. The program's
	// configuration and output are as with exec, and when it exits by
	// itself the bootstrap exits with its code (the program's system
	// deletes the instance when it means to, as it does after an exec).
	Supervise bool
	// RunUID and RunGID are the unprivileged user and group a
	// supervised program runs as when the bootstrap is root; zero means
	// 65534 (nobody). A bootstrap that is not root (the emulator's
	// instances run as the user who runs the emulator) cannot drop
	// privileges, and its program runs as itself.
	RunUID, RunGID uint32
}

// A Boot is a machine's bootstrap (see Bootstrap), which a supervising
// one's owner may End.
type Boot struct{ sup *supervisor }

// NewBoot returns the bootstrap of cfg: see Bootstrap, and BootOptions
// for what opts change.
func NewBoot(cfg WorkerConfig, logger *slog.Logger, exit func(code int), opts BootOptions) (*Boot, error) {
	sup := &supervisor{cfg: cfg, log: logger, exit: exit, opts: opts}
	if opts.Supervise {
		if err := becomeSubreaper(); err != nil {
			return nil, fmt.Errorf("supervising the run: %w", err)
		}
	}
	return &Boot{sup: sup}, nil
}

// Serve serves the bootstrap on ln; it returns only if it cannot serve.
func (b *Boot) Serve(ln net.Listener) error { return b.sup.serve(ln) }

// End ends the machine's run for good: the bootstrap stops serving and
// drops its connections, the supervised program and every descendant of
// it are killed, and no program starts from then on. The bootstrap does
// not exit (nor call its exit function): what owns the machine decides
// what becomes of it. End returns once no descendant is left, or after
// a minute of trying.
func (b *Boot) End(why string) {
	s := b.sup
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	if s.deadline != nil {
		s.deadline.Stop()
	}
	halt := s.halt
	s.mu.Unlock()
	if halt != nil {
		halt()
	}
	n, err := killDescendants(time.Minute)
	if err != nil {
		s.log.Error("ending the run: processes of the run are left", "machine", s.cfg.Name, "err", err)
		return
	}
	s.log.Info("ended the run", "machine", s.cfg.Name, "why", why, "killed", n)
}

// startChild starts the uploaded program at path (its open file f) as
// the bootstrap's child, with its configuration through pipe, and exits
// with its code when it exits by itself.
func (s *supervisor) startChild(f *os.File, path string, args, env []string, cfg WorkerConfig) {
	// The program's descriptors: 3 its configuration, 4 (off Linux
	// unused) the uploaded binary, which it execs through /proc/self/fd.
	if strings.HasPrefix(path, "/proc/self/fd/") {
		path = "/proc/self/fd/4"
	}
	cfg.Uploaded = path
	pipe, err := cfg.Pipe()
	if err != nil {
		s.log.Error("passing the configuration to the run", "err", err)
		s.exit(1)
		return
	}
	defer pipe.Close()
	defer f.Close()
	cmd := &exec.Cmd{
		Path: path, Args: append([]string{path}, args[1:]...),
		Env:    append(env, EnvConfig+"=3"),
		Stdout: os.Stdout, Stderr: os.Stderr,
		ExtraFiles:  []*os.File{pipe, f},
		SysProcAttr: runAttr(s.opts),
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	// Started with the lock held: End either sees this child among the
	// descendants or keeps it from starting.
	err = cmd.Start()
	s.mu.Unlock()
	if err != nil {
		s.log.Error("starting the uploaded binary failed", "err", err)
		s.exit(1)
		return
	}
	pid := cmd.Process.Pid
	s.log.Info("supervising the run", "machine", s.cfg.Name, "pid", pid)
	go func() {
		code := reapUntil(pid)
		s.mu.Lock()
		ended := s.ended
		s.mu.Unlock()
		if ended {
			return // End killed it; the machine's owner decides the rest
		}
		// What the program left behind goes with it.
		killDescendants(10 * time.Second)
		s.log.Info("the run exited", "machine", s.cfg.Name, "code", code)
		os.Exit(code)
	}()
}

// exitCode is the code a shell would report for ws.
func exitCode(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 1
}
