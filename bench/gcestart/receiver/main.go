// Command receiver is gcestart's upload floor: the least a machine can do
// to run its driver's binary. It serves one POST over HTTP/2 and TLS (with
// the RPC's settings), writes the body to a memory file, runs it, answers
// and exits. It prints its address first.
//
// Its certificate and key come PEM-encoded on its standard input; it runs
// a binary only from a client that presents that same certificate. The binary it runs gets GCESTART_FLOOR=1.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"

	"github.com/gcefleet/gcefleet/bigmachine/rpc"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		os.Exit(1)
	}
}

func run() error {
	pems, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(pems, pems) // each takes its own blocks
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr())
	clients := x509.NewCertPool()
	clients.AddCert(cert.Leaf) // X509KeyPair fills in Leaf
	done := make(chan struct{})
	srv := &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients},
		HTTP2:     rpc.HTTP2Config(),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer close(done)
			if err := runBody(r.Body); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		}),
	}
	go srv.ServeTLS(ln, "", "")
	<-done
	return srv.Shutdown(context.Background())
}

// runBody writes the binary to a memory file and runs it.
func runBody(body io.Reader) error {
	fd, err := unix.MemfdCreate("receiver", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "receiver")
	defer f.Close()
	if _, err := io.Copy(f, body); err != nil {
		return err
	}
	cmd := exec.Command(fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd))
	cmd.Env = append(os.Environ(), "GCESTART_FLOOR=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}
