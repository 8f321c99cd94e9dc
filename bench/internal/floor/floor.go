// Package floor measures what no start of N machines on one host can beat,
// for the start benchmarks (bench/gcestart, bench/poolstart) to set beside
// their figures in the same run: N processes running a binary from memory
// (Run), and N receivers each taking the binary over HTTP/2 and mutual TLS
// with the RPC's settings, as a machine takes it from its driver, and
// running it (Upload).
//
// The binary a floor runs must return at once when IsProcess reports true:
// call it first thing in main.
package floor

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gcefleet/gcefleet/bigmachine/rpc"
	"github.com/gcefleet/gcefleet/internal/testutil"
)

// Env marks a floor process; the receiver sets it too.
const Env = "GCESTART_FLOOR"

// IsProcess reports whether this process is a floor's: started,
// initialised, and to exit at once.
func IsProcess() bool { return os.Getenv(Env) != "" }

// BuildReceiver builds the upload floor's receiver into dir.
func BuildReceiver(dir string) (string, error) {
	out := filepath.Join(dir, "receiver")
	if b, err := exec.Command("go", "build", "-o", out, "github.com/gcefleet/gcefleet/bench/gcestart/receiver").CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the upload floor's receiver: %v\n%s", err, b)
	}
	return out, nil
}

// Run runs n copies of bin at once, each from a memory file of its own
// written just before, and returns how long until all have exited.
func Run(bin []byte, n int) (time.Duration, error) {
	start := time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := runFromMemory(bin); err != nil {
				errs[i] = fmt.Errorf("floor process: %w", err)
			}
		})
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// Upload starts n receivers at once, uploads bin to each over HTTP/2 and
// TLS with the RPC's settings, and returns how long until all have run
// it and answered.
func Upload(receiver string, bin []byte, n int) (time.Duration, error) {
	cert, err := testutil.SelfSigned("floor")
	if err != nil {
		return 0, err
	}
	certPEM, keyPEM := testutil.CertPEM(cert)
	hc := rpc.HTTPClient(&tls.Config{RootCAs: testutil.CertPool(cert), ServerName: "floor", Certificates: []tls.Certificate{cert}})
	defer hc.CloseIdleConnections()
	start := time.Now()
	took := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cmd := exec.Command(receiver)
			cmd.Stdin = bytes.NewReader(append(append([]byte(nil), certPEM...), keyPEM...)) // not the environment: no key goes there
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err == nil {
				err = cmd.Start()
			}
			if err != nil {
				errs[i] = err
				return
			}
			defer cmd.Wait()
			addr, err := bufio.NewReader(out).ReadString('\n')
			if err != nil {
				cmd.Process.Kill()
				errs[i] = fmt.Errorf("upload floor process: %w", err)
				return
			}
			resp, err := hc.Post("https://"+strings.TrimSpace(addr)+"/run", "application/octet-stream", bytes.NewReader(bin))
			if err != nil {
				cmd.Process.Kill()
				errs[i] = err
				return
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			took[i] = time.Since(start) // the receiver's exit is not part of it
			if resp.StatusCode != http.StatusOK {
				errs[i] = fmt.Errorf("upload floor process: %s: %s", resp.Status, msg)
			}
		})
	}
	wg.Wait()
	return slices.Max(took), errors.Join(errs...)
}

// runFromMemory writes bin to a memory file and runs it as a floor process.
func runFromMemory(bin []byte) error {
	fd, err := unix.MemfdCreate("gcestart-floor", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "gcestart-floor")
	defer f.Close()
	if _, err := f.Write(bin); err != nil {
		return err
	}
	cmd := exec.Command(fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd))
	cmd.Env = append(os.Environ(), Env+"=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}
