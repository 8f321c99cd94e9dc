package bigmachine

import (
	"context"
	"crypto"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// A System is where machines come from: child processes (system/local),
// Compute Engine instances (system/gce), leased machines. The driver uses
// it to start machines and watch them; a worker uses it to serve and exit.
type System interface {
	// Name is the system's short name, such as "local".
	Name() string
	// Start starts req.N machines that each run a bootstrap or the
	// driver's own binary, configured by req.Config(name), and returns
	// those it started. A partial start returns the machines that started
	// and an error saying why the others did not.
	Start(ctx context.Context, req StartRequest) ([]Spec, error)
	// Keepalive says how often the driver renews a machine's keepalive
	// and how long a worker lives without one.
	Keepalive() Keepalive
	// KeepaliveFailed is called by the driver when a keepalive to m fails.
	// It reports whether the machine is gone for good (a process that
	// exited, an instance preempted or deleted), so the driver can stop it
	// at once instead of waiting out the timeout.
	KeepaliveFailed(ctx context.Context, m *Machine) (gone bool, why error)
	// Tail copies what machine m writes to its output to w until ctx ends.
	Tail(ctx context.Context, m *Machine, w io.Writer) error
	// HTTPClient returns the client the driver calls a machine with.
	HTTPClient(cfg *tls.Config) *http.Client
	// Listen returns the listener a worker serves on, given the address
	// in its WorkerConfig.
	Listen(addr string) (net.Listener, error)
	// Exit ends a worker: called when its keepalive lapses or the driver
	// asks it to go. A cloud system deletes its instance.
	Exit(code int)
	// Shutdown releases what the system holds for the driver's machines,
	// once the driver has told them to exit.
	Shutdown(ctx context.Context) error
}

// A Console is a System that can show what a machine printed where the
// driver cannot see it, such as a cloud instance's serial port before its
// bootstrap answered. The driver adds it to the error of a machine that
// failed to start, so that a wrong image or a crashed bootstrap says so.
type Console interface {
	// ConsoleTail returns the last lines machine m printed to its console,
	// at most about a screenful.
	ConsoleTail(ctx context.Context, m *Machine) (string, error)
}

// An Enroller is a System whose machines make their own keys and prove
// who they are before the driver issues their certificates, so that no
// private key leaves its machine. The driver calls Enroll for each machine
// before it first calls the machine; Enroll returns once the machine holds
// its certificate (signed with the StartRequest's Sign) or cannot get one.
type Enroller interface {
	Enroll(ctx context.Context, m *Machine) error
}

// StartRequest is what a System is asked to start.
type StartRequest struct {
	// N is the number of machines.
	N int
	// Config returns the configuration of the machine named name, with
	// its credentials, to hand to it (through an inherited pipe, see
	// WorkerConfig.Pipe).
	Config func(name string, listen string) (WorkerConfig, error)
	// CA is the run's CA certificate (PEM), which machines trust the
	// driver by; Sign issues machine name's certificate, signed by that
	// CA, for a public key the machine made and proved it holds. They are
	// for systems whose machines make their own keys (see Enroller).
	CA   []byte
	Sign func(name string, pub crypto.PublicKey) (certPEM []byte, err error)
	// Binary, Args and Env are the driver's program as it should run on
	// the machine, for systems that start it directly; such a system sets
	// the WorkerConfig's Digest to Digest, the binary's, so the machine
	// need not hash itself to prove what it runs.
	Binary string
	Digest string
	Args   []string
	Env    []string
}

// Spec describes a machine a System started.
type Spec struct {
	Name     string
	Addr     string // host:port the machine serves on
	Maxprocs int
	// Handle is the system's own record of the machine.
	Handle any
}

// Keepalive is a system's liveness timing.
type Keepalive struct {
	// Period is how often the driver renews each machine's keepalive.
	Period time.Duration
	// Timeout is how long a worker lives without a renewal, and how long
	// the driver tolerates failing renewals before it stops the machine.
	Timeout time.Duration
}

// EnvConfig is the environment variable that marks a worker process: a
// process started with it set is a worker, and Start serves and never
// returns. Its value is only the number of an inherited file descriptor
// (a pipe) that holds the worker's configuration, which the worker reads
// once and closes: what a process's environment or command line holds
// stays readable in /proc/PID for as long as it runs, so no secret goes
// there.
const EnvConfig = "GCEFLEET_BIGMACHINE"

// maxConfig bounds a worker configuration: a few certificates, and far
// less than a pipe's buffer, so that it is written whole before the
// worker starts.
const maxConfig = 32 << 10

// WorkerConfig is what a machine needs to serve the driver: its name, where
// to listen, and its credentials.
type WorkerConfig struct {
	Name   string `json:"name"`
	Listen string `json:"listen"`
	// Cert and Key are the machine's own; CA is the run's certificate
	// authority, whose key stays with the driver.
	Cert []byte `json:"cert"`
	Key  []byte `json:"key"`
	CA   []byte `json:"ca"`
	// Timeout is how long the worker waits for its first keepalive.
	Timeout time.Duration `json:"timeout"`
	// Uploaded is the binary the bootstrap received and exec'd; the
	// worker removes it, and its directory, as it starts.
	Uploaded string `json:"uploaded,omitempty"`
	// Digest is the uploaded binary's SHA-256, which the bootstrap
	// computed as it received it, so the worker need not read itself.
	Digest string `json:"digest,omitempty"`
}

// Pipe returns the read end of a pipe that holds c, for a worker to
// inherit (through exec.Cmd.ExtraFiles, or an exec) with EnvConfig set to
// the descriptor's number in the worker. All of c is written and the
// write end closed before Pipe returns, so the worker may start after, or
// replace, the process that made it. The caller closes the read end once
// the worker has it.
func (c WorkerConfig) Pipe() (*os.File, error) {
	enc := c.Encode()
	if len(enc) > maxConfig {
		return nil, fmt.Errorf("bigmachine: worker configuration of %d bytes exceeds %d", len(enc), maxConfig)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("bigmachine: a pipe for the worker configuration: %w", err)
	}
	// A pipe's buffer takes far more than maxConfig; the deadline only
	// keeps a system with a smaller one from blocking here for good.
	w.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = io.WriteString(w, enc)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("bigmachine: writing the worker configuration to its pipe: %w", err)
	}
	return r, nil
}

// ReadWorkerConfig reads this process's worker configuration from the
// descriptor that EnvConfig names, closes the descriptor and unsets
// EnvConfig, so that neither reaches a child. It reports ok false when
// this process is not a worker.
func ReadWorkerConfig() (c WorkerConfig, ok bool, err error) {
	v, ok := os.LookupEnv(EnvConfig)
	if !ok {
		return c, false, nil
	}
	os.Unsetenv(EnvConfig)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return c, true, fmt.Errorf("bigmachine: %s=%q is not the number of an inherited descriptor (3 or more) holding the worker configuration; a worker is started by its driver's system, not by hand", EnvConfig, v)
	}
	f := os.NewFile(uintptr(fd), "bigmachine-config")
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfig+1))
	if err != nil {
		return c, true, fmt.Errorf("bigmachine: reading the worker configuration from descriptor %d (%s): %w", fd, EnvConfig, err)
	}
	if len(b) > maxConfig {
		return c, true, fmt.Errorf("bigmachine: the worker configuration on descriptor %d exceeds %d bytes", fd, maxConfig)
	}
	c, err = DecodeWorkerConfig(string(b))
	return c, true, err
}

// Encode returns c as one printable string, as Pipe writes it.
func (c WorkerConfig) Encode() string {
	b, _ := json.Marshal(c)
	return base64.RawStdEncoding.EncodeToString(b)
}

// DecodeWorkerConfig parses what Encode returned.
func DecodeWorkerConfig(s string) (WorkerConfig, error) {
	var c WorkerConfig
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil {
		return c, fmt.Errorf("bigmachine: bad worker configuration: %w", err)
	}
	if c.Name == "" || c.Listen == "" || len(c.Cert) == 0 || len(c.Key) == 0 || len(c.CA) == 0 {
		return c, errors.New("bigmachine: worker configuration lacks its name, address or credentials")
	}
	return c, nil
}
