// Package bigmachine runs one Go program across many machines as if they
// were one. The program's driver starts machines from a System, ships its
// own binary to each, and calls Go methods on them over mutually
// authenticated RPC; on each machine, the same program runs as a worker
// that serves those methods.
//
// A program calls Start first thing in main. In a worker, Start serves and
// never returns; in the driver, it returns the *B that starts machines:
//
//	b := bigmachine.Start(local.System())
//	defer b.Shutdown()
//	machines, err := b.Start(ctx, 4, bigmachine.Services{"Pi": pi{}})
//	...
//	err = machines[0].Call(ctx, "Pi.Sample", n, &inside)
//
// Service values travel to the workers as gob-encoded interface values, so
// their types must be registered with gob.Register in an init function.
package bigmachine

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gcefleet/gcefleet/bigmachine/internal/pki"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
)

// A B is a big machine: the driver's handle on its machines.
type B struct {
	system      System
	log         *slog.Logger
	output      io.Writer
	worker      bool
	ca          *pki.CA
	driver      pki.Credentials
	metrics     *rpc.Metrics
	reg         *prometheus.Registry
	timeout     time.Duration // how long a machine may take to start
	compression Compression

	digestOnce sync.Once
	digest     string
	digestErr  error

	// The binary compressed for uploads across a network, one flight per
	// path (see compressed). compressFile makes it; tests replace it.
	zmu          sync.Mutex
	zcache       map[string]*zflight
	compressFile func(path string) ([]byte, error)
	compressions *prometheus.CounterVec

	mu       sync.Mutex
	machines []*Machine
	shutdown bool
}

// An Option configures Start.
type Option func(*B)

// WithLogger sends the runtime's logs to l instead of slog.Default().
func WithLogger(l *slog.Logger) Option { return func(b *B) { b.log = l } }

// WithOutput sends the machines' output, prefixed with their names, to w
// instead of os.Stderr.
func WithOutput(w io.Writer) Option { return func(b *B) { b.output = w } }

// WithStartTimeout bounds how long a machine may take from Start to
// Running (default 2 minutes).
func WithStartTimeout(d time.Duration) Option { return func(b *B) { b.timeout = d } }

// Start returns the B of the driver. In a worker process (one whose
// environment names its configuration's descriptor in EnvConfig) it serves the driver instead and never
// returns, so a program calls it before doing anything else.
func Start(system System, opts ...Option) *B {
	b := &B{system: system, log: slog.Default(), output: os.Stderr, timeout: 2 * time.Minute, compressFile: zstdFile}
	for _, o := range opts {
		o(b)
	}
	if cfg, ok, err := ReadWorkerConfig(); ok {
		b.worker = true
		if err != nil {
			b.log.Error(err.Error())
			system.Exit(2)
		}
		runWorker(system, b, cfg)
		select {}
	}
	ca, err := pki.NewCA("bigmachine driver CA", 30*24*time.Hour)
	if err != nil {
		panic(fmt.Sprintf("bigmachine: making the run's CA: %v", err))
	}
	cert, key, err := ca.Issue(pki.DriverName)
	if err != nil {
		panic(fmt.Sprintf("bigmachine: issuing the driver's certificate: %v", err))
	}
	b.ca = ca
	b.driver = pki.Credentials{CertPEM: cert, KeyPEM: key, CAPEM: ca.CertPEM}
	b.reg = prometheus.NewRegistry()
	b.metrics = rpc.NewMetrics(b.reg, "client")
	b.compressions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bigmachine_binary_compressions_total",
		Help: "Compressions of the binary for uploads across a network, by outcome (ok, error).",
	}, []string{"outcome"})
	b.compressions.WithLabelValues("ok")
	b.compressions.WithLabelValues("error")
	b.reg.MustRegister(b.compressions)
	return b
}

// Worker reports whether this process was started as a machine of a
// driver, where Start serves rather than returns. A driver checks its own
// configuration before Start; a worker's may be incomplete (it may lack the
// driver's environment) and is not its to check.
func Worker() bool {
	_, ok := os.LookupEnv(EnvConfig)
	return ok
}

// System returns the B's system.
func (b *B) System() System { return b.system }

// IsDriver reports whether this process is the driver rather than a worker.
func (b *B) IsDriver() bool { return !b.worker }

// A Param configures the machines of one (*B).Start.
type Param interface{ param(*params) }

type params struct {
	services Services
	env      []string
	binary   string
	size     int64  // of binary
	digest   string // of binary
	args     []string
	argsSet  bool
}

// Services are the services each machine serves, by name. Each value's
// exported methods of the form func(ctx, arg T, reply *R) error become
// callable as "Name.Method"; a value with an Init(*B) error method has it
// called on the machine before the machine is Running.
type Services map[string]any

func (s Services) param(p *params) {
	if p.services == nil {
		p.services = Services{}
	}
	for k, v := range s {
		p.services[k] = v
	}
}

// Environ adds KEY=VALUE pairs to the machines' environment.
type Environ []string

func (e Environ) param(p *params) { p.env = append(p.env, e...) }

// Args are the command-line arguments the machines' program runs with
// (by default, the driver's own).
type Args []string

func (a Args) param(p *params) { p.args, p.argsSet = a, true }

// Binary is the path of the program the machines run (by default, the
// driver's own executable). It must call Start as the driver does.
type Binary string

func (x Binary) param(p *params) { p.binary = string(x) }

// Machines returns the machines started so far, in order.
func (b *B) Machines() []*Machine {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*Machine(nil), b.machines...)
}

// Start starts n machines with params and returns them once they are all
// Running. If some fail, it returns those that run and an error saying how
// many failed and why; the failed ones are Stopped, with their Err set.
func (b *B) Start(ctx context.Context, n int, ps ...Param) ([]*Machine, error) {
	if b.worker {
		return nil, errors.New("bigmachine: machines start machines only from the driver")
	}
	if n <= 0 {
		return nil, fmt.Errorf("bigmachine: cannot start %d machines", n)
	}
	var p params
	for _, x := range ps {
		x.param(&p)
	}
	if p.binary == "" {
		p.binary = executable()
	}
	if !p.argsSet {
		p.args = os.Args[1:]
	}
	// Every service must cross the wire; find out now, not on a machine.
	var services []registerRequest
	for name, svc := range p.services {
		if err := gob.NewEncoder(io.Discard).Encode(&registerRequest{Name: name, Service: svc}); err != nil {
			return nil, fmt.Errorf("bigmachine: service %s (%T) cannot be sent to machines: %w; register its type with gob.Register in an init function", name, svc, err)
		}
		services = append(services, registerRequest{Name: name, Service: svc})
	}
	sort.Slice(services, func(i, j int) bool { return services[i].Name < services[j].Name })
	// What the machines must run, read once for them all.
	st, err := os.Stat(p.binary)
	if err == nil {
		p.size = st.Size()
		p.digest, err = b.ownDigest(p.binary)
	}
	if err != nil {
		return nil, fmt.Errorf("bigmachine: reading the binary to ship: %w", err)
	}

	b.mu.Lock()
	if b.shutdown {
		b.mu.Unlock()
		return nil, errors.New("bigmachine: Start after Shutdown")
	}
	b.mu.Unlock()

	// A compression that failed in an earlier Start is tried again, once
	// for this one (the flight it starts is shared by all its machines).
	b.forgetFailedCompression(p.binary)

	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	specs, startErr := b.system.Start(ctx, StartRequest{
		N:      n,
		Config: b.workerConfig,
		CA:     b.ca.CertPEM,
		Sign:   b.ca.IssueFor,
		Binary: p.binary, Digest: p.digest, Args: p.args, Env: p.env,
	})
	machines := make([]*Machine, len(specs))
	for i, spec := range specs {
		m := newMachine(b, spec)
		tlsCfg, err := b.driver.ClientConfig(spec.Name)
		if err != nil {
			return nil, err
		}
		m.client = &rpc.Client{HTTP: b.system.HTTPClient(tlsCfg), Metrics: b.metrics}
		m.setState(Starting, nil)
		machines[i] = m
		go func() {
			if err := b.system.Tail(m.ctx, m, &prefixWriter{w: b.output, prefix: m.name + ": "}); err != nil && m.ctx.Err() == nil {
				b.log.Warn("tailing machine output", "machine", m.name, "err", err)
			}
		}()
	}
	b.mu.Lock()
	b.machines = append(b.machines, machines...)
	b.mu.Unlock()

	// The binary is compressed only for a machine that needs it, never for
	// a start whose machines are all on loopback (the local system, the
	// emulator), where it is never sent compressed and the compression
	// only takes CPU from the uploads (36% of a 4-machine pool start's
	// driver CPU on a 2-core host, docs/benchmarks.md). Mostly a machine
	// starts it when it is shipped (see ship). But a machine known to be
	// remote as soon as the system returns it will take the compressed
	// binary once it answers, and a cloud machine made cold (the gce
	// system) boots its bootstrap for 20 s or more after the system's
	// Start returns: compressing now, when its address is first known,
	// has the compressed binary ready when it asks, as before. A warm
	// remote machine (the pool system) waits for the rest of it, which is
	// what it would wait anyway had it asked first.
	for _, m := range machines {
		if b.compression != CompressNever && !loopback(m.Addr) {
			b.startCompressing(p.binary)
			break
		}
	}

	// Failures in the order they happen: the first few are shown, with
	// their consoles, and the rest counted.
	slots := maxFailuresShown
	if startErr != nil {
		slots-- // the system's own error is shown first
	}
	var (
		wg       sync.WaitGroup
		fmu      sync.Mutex
		failures []error
		ok       = make([]bool, len(machines))
	)
	for i, m := range machines {
		wg.Go(func() {
			err := b.boot(ctx, m, p, services)
			if err == nil {
				ok[i] = true
				m.setState(Running, nil)
				return
			}
			fmu.Lock()
			shown := len(failures) < slots
			failures = append(failures, nil)
			k := len(failures) - 1
			fmu.Unlock()
			if shown {
				err = b.withConsole(m, err)
			}
			err = fmt.Errorf("machine %s failed to start: %w", m.name, err)
			fmu.Lock()
			failures[k] = err
			fmu.Unlock()
			m.setState(Stopped, err) // Start's error tells it; no log
		})
	}
	wg.Wait()
	var running []*Machine
	for i, m := range machines {
		if ok[i] {
			running = append(running, m)
		}
	}
	var failed []string
	if startErr != nil {
		failed = append(failed, startErr.Error())
	}
	for _, err := range failures[:min(slots, len(failures))] {
		failed = append(failed, err.Error())
	}
	more := len(failures) - min(slots, len(failures))
	if more > 0 {
		failed = append(failed, fmt.Sprintf("and %d more machines failed to start (each one's Err says why)", more))
	}
	if len(running) < n {
		// One failure a line, each indented under the summary.
		for i, f := range failed {
			failed[i] = "  " + strings.ReplaceAll(f, "\n", "\n  ")
		}
		return running, fmt.Errorf("bigmachine: %d of %d machines started:\n%s", len(running), n, strings.Join(failed, "\n"))
	}
	return running, nil
}

// workerConfig issues a machine's credentials.
func (b *B) workerConfig(name, listen string) (WorkerConfig, error) {
	cert, key, err := b.ca.Issue(name)
	if err != nil {
		return WorkerConfig{}, err
	}
	return WorkerConfig{Name: name, Listen: listen, Cert: cert, Key: key, CA: b.ca.CertPEM, Timeout: b.system.Keepalive().Timeout}, nil
}

// compress says whether uploads to m go compressed.
func (b *B) compress(m *Machine) bool {
	switch b.compression {
	case CompressAlways:
		return true
	case CompressNever:
		return false
	}
	return !loopback(m.Addr)
}

// loopback says whether addr (host:port) is on a loopback address, where
// bytes cost nothing. A name is not: it is resolved elsewhere.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Compression says when the driver compresses the binary it uploads.
type Compression int

const (
	// CompressAcrossNetworks compresses uploads to machines that are not
	// on a loopback address (the default).
	CompressAcrossNetworks Compression = iota
	// CompressAlways and CompressNever do as they say.
	CompressAlways
	CompressNever
)

// WithCompression sets when uploads are compressed.
func WithCompression(c Compression) Option { return func(b *B) { b.compression = c } }

// A zflight is one compression of a binary, shared by every machine
// that needs it: the first starts it, the others wait for its result.
type zflight struct {
	done chan struct{} // closed once z and err are set
	z    []byte
	err  error
}

// compressed returns the binary compressed with zstd, waiting for the
// compression under way or starting it, until ctx ends. A success is kept
// for every later machine and Start.
func (b *B) compressed(ctx context.Context, binary string) ([]byte, error) {
	f := b.startCompressing(binary)
	select {
	case <-f.done:
		return f.z, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startCompressing returns binary's compression, starting it in the
// background unless it is under way or done. It does not outlive its
// work: a compression nobody waits for any more still ends by itself.
func (b *B) startCompressing(binary string) *zflight {
	b.zmu.Lock()
	defer b.zmu.Unlock()
	if f, ok := b.zcache[binary]; ok {
		return f
	}
	f := &zflight{done: make(chan struct{})}
	if b.zcache == nil {
		b.zcache = map[string]*zflight{}
	}
	b.zcache[binary] = f
	go func() {
		defer close(f.done)
		f.z, f.err = b.compressFile(binary)
		if f.err != nil {
			f.err = fmt.Errorf("compressing %s: %w", binary, f.err)
			b.log.Warn("uploading the binary as it is", "err", f.err)
			b.compressions.WithLabelValues("error").Inc()
			return
		}
		b.compressions.WithLabelValues("ok").Inc()
	}()
	return f
}

// forgetFailedCompression drops binary's compression if it failed, so
// that the next one tries again.
func (b *B) forgetFailedCompression(binary string) {
	b.zmu.Lock()
	defer b.zmu.Unlock()
	f, ok := b.zcache[binary]
	if !ok {
		return
	}
	select {
	case <-f.done:
		if f.err != nil {
			delete(b.zcache, binary)
		}
	default: // under way: its result is this Start's too
	}
}

// zstdFile returns the file at path compressed with zstd.
func zstdFile(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		return nil, err
	}
	return enc.EncodeAll(raw, nil), nil
}

func (b *B) ownDigest(binary string) (string, error) {
	if binary != executable() {
		return fileDigest(binary)
	}
	b.digestOnce.Do(func() { b.digest, b.digestErr = fileDigest(binary) })
	return b.digest, b.digestErr
}

// maxFailuresShown bounds how many machines' failures a partial start's
// error lists: a mistake that fails 64 machines is told a few times, not 64.
const maxFailuresShown = 3

// withConsole adds to err what the machine printed to its console, for
// systems that can show it. The start's context may have ended, so the
// console gets a few seconds of its own.
func (b *B) withConsole(m *Machine, err error) error {
	c, ok := b.system.(Console)
	if !ok {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tail, cerr := c.ConsoleTail(ctx, m)
	tail = strings.TrimSpace(tail)
	if cerr != nil || tail == "" {
		return err
	}
	return fmt.Errorf("%w\n  its console ended with:\n    %s", err, strings.ReplaceAll(tail, "\n", "\n    "))
}

// boot takes a machine from its first answer to Running: ship the binary
// if the machine runs another, then register the services.
func (b *B) boot(ctx context.Context, m *Machine, p params, services []registerRequest) error {
	if e, ok := b.system.(Enroller); ok {
		if err := e.Enroll(ctx, m); err != nil {
			return fmt.Errorf("enrolling: %w", err)
		}
	}
	info, err := m.waitInfo(ctx, p.size, func(Info) bool { return true })
	if err != nil {
		return err
	}
	// From its first answer on, the machine lives by the driver's
	// keepalives, through shipping and exec too.
	go m.keepalive()
	if info.Digest != p.digest {
		if err := b.ship(ctx, m, info, p); err != nil {
			return err
		}
		// Until the bootstrap has gone, it may still answer.
		if info, err = m.waitInfo(ctx, p.size, func(i Info) bool { return i.Payload }); err != nil {
			return fmt.Errorf("after exec: %w", err)
		}
		if info.Digest != p.digest || !info.Payload {
			return fmt.Errorf("after exec the machine runs binary %.12s, not the driver's %.12s", info.Digest, p.digest)
		}
	}
	if !info.Payload {
		return errors.New("the machine runs the driver's binary as a bootstrap; it must call bigmachine.Start")
	}
	for _, s := range services {
		if err := m.call(ctx, "Supervisor.Register", s, &struct{}{}); err != nil {
			return fmt.Errorf("registering service %s: %w", s.Name, err)
		}
	}
	return nil
}

// ship uploads the driver's binary to a bootstrap and execs it. Across a
// network the binary goes compressed (made once, by the first machine
// that needs it, and shared by all), a third of the bytes; on loopback,
// where bytes are free and the CPU is shared, as it is. A bootstrap too
// old to take compression, or a failed compression, gets it as it is too.
func (b *B) ship(ctx context.Context, m *Machine, info Info, p params) error {
	if info.GOOS != goos || info.GOARCH != goarch {
		return fmt.Errorf("the machine is %s/%s and this binary %s/%s; build the driver for %s/%s", info.GOOS, info.GOARCH, goos, goarch, info.GOOS, info.GOARCH)
	}
	var got int64
	err := errors.New("not compressed")
	if b.compress(m) {
		var z []byte
		if z, err = b.compressed(ctx, p.binary); err == nil {
			err = m.call(ctx, "Supervisor.UploadZstd", io.Reader(bytes.NewReader(z)), &got)
		}
	}
	if err != nil {
		zerr := err
		f, ferr := os.Open(p.binary)
		if ferr != nil {
			return ferr
		}
		defer f.Close()
		if err = m.call(ctx, "Supervisor.Upload", io.Reader(f), &got); err != nil && b.compress(m) {
			err = fmt.Errorf("%w (compressed: %v)", err, zerr)
		}
	}
	if err != nil {
		return fmt.Errorf("uploading the binary: %w", err)
	}
	if got != p.size {
		return fmt.Errorf("%d bytes of the %d-byte binary arrived", got, p.size)
	}
	if err := m.call(ctx, "Supervisor.Exec", ExecRequest{Args: p.args, Env: p.env, Digest: p.digest}, &struct{}{}); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	return nil
}

// Shutdown tells every machine to exit, stops them, and lets the system
// release what it holds. It waits, but not for a machine that does not
// answer.
func (b *B) Shutdown() {
	b.mu.Lock()
	if b.shutdown || b.worker {
		b.mu.Unlock()
		return
	}
	b.shutdown = true
	machines := append([]*Machine(nil), b.machines...)
	b.mu.Unlock()
	// Cloud systems take a while to delete machines; they bound their
	// own waits within this.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, m := range machines {
		wg.Go(func() {
			if m.State() == Running {
				cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
				m.call(cctx, "Supervisor.Shutdown", struct{}{}, &struct{}{})
				ccancel()
			}
			m.setState(Stopped, errors.New("shut down"))
		})
	}
	wg.Wait()
	if err := b.system.Shutdown(ctx); err != nil {
		b.log.Error("system shutdown", "err", err)
	}
}

const goos, goarch = runtime.GOOS, runtime.GOARCH

// prefixWriter prefixes each line with a machine's name.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	mid    bool // in the middle of a line
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(b)
	var out bytes.Buffer
	for len(b) > 0 {
		if !p.mid {
			out.WriteString(p.prefix)
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			out.Write(b)
			p.mid = true
			break
		}
		out.Write(b[:i+1])
		p.mid = false
		b = b[i+1:]
	}
	_, err := p.w.Write(out.Bytes())
	return n, err
}
