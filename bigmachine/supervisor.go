package bigmachine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/gcefleet/gcefleet/bigmachine/internal/pki"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
)

// Info is what a machine says of itself before the driver sends it work.
type Info struct {
	GOOS, GOARCH string
	// Digest is the SHA-256 of the running binary, hex encoded.
	Digest string
	// Payload is true once the machine runs the driver's program (rather
	// than a bootstrap) and can take services.
	Payload bool
	NumCPU  int
}

// ExecRequest replaces a bootstrap with the uploaded binary.
type ExecRequest struct {
	Args []string
	Env  []string
	// Digest is the binary's digest, which the new program reports.
	Digest string
}

// Stats is what a machine reports with each keepalive.
type Stats struct {
	Uptime     time.Duration
	HeapAlloc  uint64
	Sys        uint64
	Goroutines int
	Load1      float64
}

type registerRequest struct {
	Name    string
	Service any
}

// ProfileRequest asks a machine for a pprof profile.
type ProfileRequest struct {
	Name    string // "profile" (CPU), "heap", "goroutine", ...
	Seconds int    // for CPU profiles
}

// supervisor is the service every machine serves, bootstrap or worker.
type supervisor struct {
	cfg     WorkerConfig
	payload bool
	started time.Time
	log     *slog.Logger
	server  *rpc.Server
	worker  *B // the worker's B, given to services' Init
	exit    func(code int)
	output  *outputLog // what the worker wrote, for Tail; nil in a bootstrap
	opts    BootOptions

	digestOnce sync.Once
	digest     string
	digestErr  error

	mu       sync.Mutex
	deadline *time.Timer
	uploaded string   // path of the binary received, until exec
	upFile   *os.File // and its open file
	execing  bool
	stop     func() // ends serving, before exec
	halt     func() // ends serving at once, connections and all (End)
	ended    bool   // by End: nothing runs from now on
}

// driverOnly are the methods only the driver may call: they change what
// the machine runs or keep it alive.
var driverOnly = map[string]bool{
	"Supervisor.Upload": true, "Supervisor.UploadZstd": true, "Supervisor.Exec": true, "Supervisor.Register": true,
	"Supervisor.Keepalive": true, "Supervisor.Shutdown": true,
}

func authorize(r *http.Request, method string) error {
	if !driverOnly[method] {
		return nil
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != pki.DriverName {
		return errors.New("only the driver may call " + method)
	}
	return nil
}

func (s *supervisor) ownDigest() (string, error) {
	s.digestOnce.Do(func() {
		if s.cfg.Digest != "" {
			s.digest = s.cfg.Digest
			return
		}
		s.digest, s.digestErr = fileDigest(runningBinary())
	})
	return s.digest, s.digestErr
}

// runningBinary is the file of the running program, which on Linux can be
// read even after it is removed (as a worker removes its uploaded binary).
func runningBinary() string {
	if _, err := os.Stat("/proc/self/exe"); err == nil {
		return "/proc/self/exe"
	}
	return executable()
}

func executable() string {
	exe, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return exe
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// InfoRequest says what the driver would ship.
type InfoRequest struct {
	// Size is the size of the driver's binary. A machine whose binary is
	// of another size reports no digest: it cannot match, and hashing a
	// large binary costs more than asking.
	Size int64
}

func (s *supervisor) Info(ctx context.Context, req InfoRequest, info *Info) error {
	if !s.payload {
		s.extend(s.timeout()) // the driver is here
	}
	*info = Info{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, Payload: s.payload, NumCPU: runtime.NumCPU()}
	if s.cfg.Digest == "" {
		if st, err := os.Stat(runningBinary()); err == nil && st.Size() != req.Size {
			return nil
		}
	}
	d, err := s.ownDigest()
	if err != nil {
		return fmt.Errorf("digest of the running binary: %w", err)
	}
	info.Digest = d
	return nil
}

// UploadZstd receives a binary as a zstd stream, which is a third of the
// bytes on the wire, and returns the binary's size. The stream's checksum
// and TLS vouch for the bytes.
func (s *supervisor) UploadZstd(ctx context.Context, r io.Reader, size *int64) error {
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return err
	}
	defer zr.Close()
	return s.Upload(ctx, zr, size)
}

// Upload receives a binary, streamed, into a memory file (or, off Linux, a
// private directory) and returns its size.
func (s *supervisor) Upload(ctx context.Context, r io.Reader, size *int64) error {
	if s.payload {
		return rpc.Errorf(rpc.Invalid, "this machine already runs its program")
	}
	// The driver keeps a bootstrap alive by talking to it: an upload can
	// outlast the first keepalive timeout, so the clock stops while it
	// runs and starts anew after.
	s.hold(true)
	defer s.hold(false)
	f, path, err := newProgram()
	if err != nil {
		return err
	}
	n, err := io.Copy(f, r)
	if err != nil {
		f.Close()
		removeProgram(path)
		return fmt.Errorf("receiving the binary: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.upFile != nil {
		s.upFile.Close()
		removeProgram(s.uploaded)
	}
	// The file stays open until exec: a memory file lives only as long as
	// a descriptor does.
	s.upFile, s.uploaded = f, path
	*size = n
	return nil
}

// Exec replaces the bootstrap with the uploaded binary once this call has
// been answered.
func (s *supervisor) Exec(ctx context.Context, req ExecRequest, _ *struct{}) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uploaded == "" {
		return rpc.Errorf(rpc.Invalid, "no binary was uploaded")
	}
	if s.execing {
		return rpc.Errorf(rpc.Invalid, "already executing")
	}
	if err := runnable(s.uploaded); err != nil {
		return rpc.Errorf(rpc.Invalid, "%v", err)
	}
	s.execing = true
	cfg := s.cfg
	cfg.Uploaded, cfg.Digest = s.uploaded, req.Digest
	if s.deadline != nil {
		s.deadline.Stop()
	}
	env := append(withoutConfig(os.Environ()), withoutConfig(req.Env)...)
	args := append([]string{s.uploaded}, req.Args...)
	path, stop := s.uploaded, s.stop
	if s.opts.Supervise {
		f := s.upFile
		go func() {
			// Answer first, as an exec does, then run the program
			// beside this bootstrap, which stays to end it when told.
			stop()
			s.startChild(f, path, args, env, cfg)
		}()
		return nil
	}
	// The new program gets its configuration as this one did: through a
	// fresh pipe it inherits, never in its environment or arguments.
	pipe, err := cfg.Pipe()
	if err != nil {
		s.execing = false
		return err
	}
	// A duplicate is inherited across exec (os.Pipe's are close-on-exec).
	fd, err := syscall.Dup(int(pipe.Fd()))
	pipe.Close()
	if err != nil {
		s.execing = false
		return fmt.Errorf("passing the configuration to the new program: %w", err)
	}
	env = append(env, EnvConfig+"="+strconv.Itoa(fd))
	go func() {
		// Answer first: stop serving gracefully, which waits for this
		// call's reply to go out, then become the new program.
		stop()
		err := syscall.Exec(path, args, env)
		s.log.Error("exec of the uploaded binary failed", "err", err)
		syscall.Close(fd)
		removeProgram(path)
		s.exit(1)
	}()
	return nil
}

// removeFile removes an uploaded binary's file and its private directory.
func removeFile(path string) { os.RemoveAll(filepath.Dir(path)) }

func withoutConfig(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, EnvConfig+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// Keepalive extends the machine's life by d from now and reports its
// vital signs.
func (s *supervisor) Keepalive(ctx context.Context, d time.Duration, stats *Stats) error {
	s.extend(d)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	*stats = Stats{Uptime: time.Since(s.started), HeapAlloc: ms.HeapAlloc, Sys: ms.Sys, Goroutines: runtime.NumGoroutine(), Load1: load1()}
	return nil
}

// hold stops the keepalive deadline while the driver is busy with this
// machine, and restarts it with the configured timeout after.
func (s *supervisor) hold(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deadline == nil || s.execing {
		return
	}
	if on {
		s.deadline.Stop()
		return
	}
	s.deadline.Reset(s.timeout())
}

func (s *supervisor) timeout() time.Duration {
	if s.cfg.Timeout > 0 {
		return s.cfg.Timeout
	}
	return time.Minute
}

func (s *supervisor) extend(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.execing || s.ended {
		return
	}
	if s.deadline == nil {
		s.deadline = time.AfterFunc(d, s.lapse)
		return
	}
	s.deadline.Reset(d)
}

// lapse ends a machine whose driver stopped renewing its keepalive.
func (s *supervisor) lapse() {
	s.mu.Lock()
	ended := s.ended
	s.mu.Unlock()
	if ended {
		return // End stopped the clock, which had fired already
	}
	s.log.Error("no keepalive from the driver; exiting", "machine", s.cfg.Name)
	s.cleanup()
	s.exit(1)
}

// Shutdown ends the machine's process once the call is answered. It is
// the driver's orderly end, so the process just exits: the driver's system
// releases the machine itself (a lapsed keepalive, in contrast, goes
// through the system's Exit, which on GCE deletes the instance).
func (s *supervisor) Shutdown(ctx context.Context, _ struct{}, _ *struct{}) error {
	go func() {
		s.stop()
		s.cleanup()
		os.Exit(0)
	}()
	return nil
}

func (s *supervisor) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uploaded != "" && !s.execing {
		removeProgram(s.uploaded)
	}
}

// Register adds a service sent by the driver, then calls its Init.
func (s *supervisor) Register(ctx context.Context, req registerRequest, _ *struct{}) error {
	if !s.payload {
		return rpc.Errorf(rpc.Invalid, "a bootstrap takes no services")
	}
	if err := s.server.Register(req.Name, req.Service); err != nil {
		return rpc.Errorf(rpc.Invalid, "%v", err)
	}
	if in, ok := req.Service.(interface{ Init(*B) error }); ok {
		if err := in.Init(s.worker); err != nil {
			return fmt.Errorf("%s.Init: %w", req.Name, err)
		}
	}
	return nil
}

// Tail streams what the machine's program writes to stdout and stderr,
// from offset on, until the call's context ends.
func (s *supervisor) Tail(ctx context.Context, offset int64, out *io.ReadCloser) error {
	if s.output == nil {
		return rpc.Errorf(rpc.Invalid, "a bootstrap keeps no output")
	}
	*out = s.output.reader(ctx, offset)
	return nil
}

// Profile streams a pprof profile of this machine.
func (s *supervisor) Profile(ctx context.Context, req ProfileRequest, out *io.ReadCloser) error {
	pr, pw := io.Pipe()
	if req.Name == "profile" {
		if req.Seconds <= 0 {
			req.Seconds = 30
		}
		if err := pprof.StartCPUProfile(pw); err != nil {
			return err
		}
		go func() {
			select {
			case <-time.After(time.Duration(req.Seconds) * time.Second):
			case <-ctx.Done():
			}
			pprof.StopCPUProfile()
			pw.Close()
		}()
		*out = pr
		return nil
	}
	p := pprof.Lookup(req.Name)
	if p == nil {
		return rpc.Errorf(rpc.Invalid, "no profile %q", req.Name)
	}
	go func() { pw.CloseWithError(p.WriteTo(pw, 0)) }()
	*out = pr
	return nil
}

// Vars returns this machine's variables as JSON, in the manner of expvar.
func (s *supervisor) Vars(ctx context.Context, _ struct{}, out *[]byte) error {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, err := json.Marshal(map[string]any{
		"cmdline": os.Args, "memstats": ms, "goroutines": runtime.NumGoroutine(),
		"uptime_seconds": time.Since(s.started).Seconds(), "load1": load1(),
	})
	*out = b
	return err
}

func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscan(string(b), &l)
	return l
}
