package claim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gcefleet/gcefleet/provider/api"
)

// Paths a warm pool machine serves (over TLS with its fleet certificate)
// until it is claimed.
const (
	// ClaimPath takes a ClaimRequest and answers a ClaimResponse: 403 for
	// a refused claim, 409 when the machine is claimed already.
	ClaimPath = "/gcefleet/pool/v1/claim"
	// CertificatePath takes the run's certificate (PEM) for the key of
	// the ClaimResponse's request and answers 204; the machine then
	// serves the run's bootstrap on the same address.
	CertificatePath = "/gcefleet/pool/v1/certificate"
	// RetirePath is the backend's, over mutual TLS with a certificate of
	// the fleet CA for RetireName: the machine's lease ended. A machine
	// not yet running a run takes no claim from now on (410); one
	// running a run kills it, every process of it, and closes its run's
	// address. Either way it answers 204 and then serves nothing but its
	// control server until the backend deletes it. The machine serves it
	// on its control address (ClaimResponse.Control), and on its claim
	// address until it is claimed.
	RetirePath = "/gcefleet/pool/v1/retire"
	// RenewPath, on the machine's control address, takes a RenewRequest:
	// the claim the provider made when the lease was extended, which
	// moves the machine's end of the lease to the claim's expiry (204).
	// A claimed machine ends its run when the latest claim it holds
	// expires (after Grace), even if nothing tells it the lease ended. A
	// claim of another lease or machine, a bad one, or one that expires
	// earlier than the one the machine holds is refused (403).
	RenewPath = "/gcefleet/pool/v1/renew"
	// RetireName is the common name of the backend's client certificate
	// that RetirePath takes.
	RetireName = "gcefleet-backend"
)

// Grace is how long after its claim's expiry a claimed machine keeps its
// run: the provider's clock, which set the expiry, and the machine's may
// differ by a few seconds, and a renewal in flight at the expiry should
// not end the run.
const Grace = 5 * time.Second

// DefaultControlPort is the port of a pool machine's control server
// unless its configuration says otherwise.
const DefaultControlPort = 8444

// MaxRequest bounds what a pool machine reads of a request.
const MaxRequest = 64 << 10

// ClaimRequest is what a driver posts to ClaimPath.
type ClaimRequest struct {
	// Claim is the token of the lease.
	Claim string `json:"claim"`
	// CA is the run's CA certificate (PEM): from now on the machine
	// accepts only what it certified.
	CA []byte `json:"ca"`
}

// ClaimResponse is a claimed machine's answer: a certificate request
// (DER) for a key it made for the run.
type ClaimResponse struct {
	CSR []byte `json:"csr"`
	// Control is the port of the machine's control server (RenewPath,
	// RetirePath), at the machine's address.
	Control string `json:"control,omitempty"`
}

// RenewRequest is what a driver posts to RenewPath.
type RenewRequest struct {
	// Claim is the token the provider returned with the lease's
	// extension.
	Claim string `json:"claim"`
}

// Session is a claimed machine's: where its bootstrap serves the run, and
// where its control server takes the lease's renewals.
type Session struct {
	Addr    string // host:port of the run's bootstrap
	Control string // host:port of the control server; "" if the machine has none
}

// Present claims the warm machine of a fulfilled lease for a run: it
// connects to the machine at conn (address, port) verifying it by
// conn.CACert (the fleet CA) as hostname and as the instance the token
// names (CheckMachine), presents token and the run's CA
// certificate (PEM), receives a certificate request made on the machine,
// has sign sign it (the run CA; bigmachine's StartRequest.Sign), delivers
// the certificate, and returns the host:port where the machine's
// bootstrap (bigmachine.Bootstrap, as gceboot runs it on the gce system)
// now serves the run, accepting only the run's CA. No private key
// travels.
func Present(ctx context.Context, conn api.Connection, hostname, token string, runCA []byte,
	sign func(pub crypto.PublicKey) (certPEM []byte, err error)) (addr string, err error) {
	s, err := PresentSession(ctx, conn, hostname, token, runCA, sign)
	return s.Addr, err
}

// PresentSession is Present, and says where the machine takes the
// lease's renewals (Renew).
func PresentSession(ctx context.Context, conn api.Connection, hostname, token string, runCA []byte,
	sign func(pub crypto.PublicKey) (certPEM []byte, err error)) (Session, error) {
	if conn.Address == "" || conn.Port <= 0 || conn.Port > 65535 {
		return Session{}, fmt.Errorf("claim: machine %s has no address and port in its connection", hostname)
	}
	// The claim names the instance its lease's catalog entry does: the
	// machine's fleet certificate must be that instance's, not one of a
	// deleted instance that had the same name.
	hc, err := machineClient(conn, hostname, instanceOf(token), false)
	if err != nil {
		return Session{}, err
	}
	defer hc.Transport.(*http.Transport).CloseIdleConnections()
	addr := net.JoinHostPort(conn.Address, strconv.Itoa(conn.Port))
	body, _ := json.Marshal(ClaimRequest{Claim: token, CA: runCA})
	b, err := post(ctx, hc, "https://"+addr+ClaimPath, "application/json", body, http.StatusOK)
	if err != nil {
		return Session{}, fmt.Errorf("claiming machine %s at %s: %w", hostname, addr, err)
	}
	var cr ClaimResponse
	if err := json.Unmarshal(b, &cr); err != nil {
		return Session{}, fmt.Errorf("claiming machine %s at %s: bad answer: %w", hostname, addr, err)
	}
	csr, err := x509.ParseCertificateRequest(cr.CSR)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return Session{}, fmt.Errorf("claiming machine %s at %s: bad certificate request: %w", hostname, addr, err)
	}
	certPEM, err := sign(csr.PublicKey)
	if err != nil {
		return Session{}, fmt.Errorf("signing the run certificate of machine %s: %w", hostname, err)
	}
	if _, err := post(ctx, hc, "https://"+addr+CertificatePath, "application/x-pem-file", certPEM, http.StatusNoContent); err != nil {
		return Session{}, fmt.Errorf("handing machine %s at %s its run certificate: %w", hostname, addr, err)
	}
	sess := Session{Addr: addr}
	if cr.Control != "" {
		sess.Control = net.JoinHostPort(conn.Address, cr.Control)
	}
	return sess, nil
}

// Renew hands the machine of conn, whose control server is at control
// (Session.Control), the claim token of its lease's extension, verifying
// the machine by conn.CACert as hostname.
func Renew(ctx context.Context, conn api.Connection, control, hostname, token string) error {
	hc, err := machineClient(conn, hostname, instanceOf(token), true)
	if err != nil {
		return err
	}
	defer hc.Transport.(*http.Transport).CloseIdleConnections()
	body, _ := json.Marshal(RenewRequest{Claim: token})
	if _, err := post(ctx, hc, "https://"+control+RenewPath, "application/json", body, http.StatusNoContent); err != nil {
		return fmt.Errorf("renewing the claim of machine %s at %s: %w", hostname, control, err)
	}
	return nil
}

// machineClient returns a client that speaks to the pool machine of conn
// as hostname, verifying it by the fleet CA of conn as instance (see
// VerifyMachine; running says whether the driver's run is on it).
func machineClient(conn api.Connection, hostname, instance string, running bool) (*http.Client, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(conn.CACert)) {
		return nil, fmt.Errorf("claim: machine %s's connection has no fleet CA certificate (ca_cert) to verify it by", hostname)
	}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: hostname, MinVersion: tls.VersionTLS13,
			// VerifyMachine verifies the chain, by the fleet CA.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				return VerifyMachine(cs.PeerCertificates, roots, hostname, instance, running, time.Now())
			}},
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 1,
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// ErrClaimed is what Present's error wraps when the machine answers that
// it is claimed already.
var ErrClaimed = errors.New("the machine is claimed already")

func post(ctx context.Context, hc *http.Client, url, ctype string, body []byte, want int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", ctype)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxRequest))
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case want:
		return b, nil
	case http.StatusForbidden, http.StatusGone:
		// The machine's refusal says "claim refused" itself.
		return nil, fmt.Errorf("%w: %s", ErrRefused, strings.TrimPrefix(string(bytes.TrimSpace(b)), ErrRefused.Error()+": "))
	case http.StatusConflict:
		return nil, fmt.Errorf("%w: %s", ErrClaimed, bytes.TrimSpace(b))
	}
	return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
}
