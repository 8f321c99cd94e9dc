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
	// the fleet CA for RetireName: the machine's lease ended before its
	// run started, so it takes no claim from now on (410) until the
	// backend deletes it.
	RetirePath = "/gcefleet/pool/v1/retire"
	// RetireName is the common name of the backend's client certificate
	// that RetirePath takes.
	RetireName = "gcefleet-backend"
)

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
	if conn.Address == "" || conn.Port <= 0 || conn.Port > 65535 {
		return "", fmt.Errorf("claim: machine %s has no address and port in its connection", hostname)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(conn.CACert)) {
		return "", fmt.Errorf("claim: machine %s's connection has no fleet CA certificate (ca_cert) to verify it by", hostname)
	}
	addr = net.JoinHostPort(conn.Address, strconv.Itoa(conn.Port))
	// The claim names the instance its lease's catalog entry does: the
	// machine's fleet certificate must be that instance's, not one of a
	// deleted instance that had the same name.
	instance := instanceOf(token)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: hostname, MinVersion: tls.VersionTLS13,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("the machine gave no certificate")
				}
				return CheckMachine(cs.PeerCertificates[0], hostname, instance, time.Now())
			}},
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 1,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	body, _ := json.Marshal(ClaimRequest{Claim: token, CA: runCA})
	b, err := post(ctx, hc, "https://"+addr+ClaimPath, "application/json", body, http.StatusOK)
	if err != nil {
		return "", fmt.Errorf("claiming machine %s at %s: %w", hostname, addr, err)
	}
	var cr ClaimResponse
	if err := json.Unmarshal(b, &cr); err != nil {
		return "", fmt.Errorf("claiming machine %s at %s: bad answer: %w", hostname, addr, err)
	}
	csr, err := x509.ParseCertificateRequest(cr.CSR)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return "", fmt.Errorf("claiming machine %s at %s: bad certificate request: %w", hostname, addr, err)
	}
	certPEM, err := sign(csr.PublicKey)
	if err != nil {
		return "", fmt.Errorf("signing the run certificate of machine %s: %w", hostname, err)
	}
	if _, err := post(ctx, hc, "https://"+addr+CertificatePath, "application/x-pem-file", certPEM, http.StatusNoContent); err != nil {
		return "", fmt.Errorf("handing machine %s at %s its run certificate: %w", hostname, addr, err)
	}
	return addr, nil
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
