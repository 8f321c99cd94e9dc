package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"time"
)

// A Proof is what an instance sends to have its certificate signed: a
// certificate request for its own key, and an identity token whose
// audience binds that key and the verifier's nonce.
type Proof struct {
	// CSR is the certificate request, DER encoded.
	CSR []byte `json:"csr"`
	// Token is the instance identity token, full format.
	Token string `json:"token"`
}

// NewProof makes an instance's proof for key: a certificate request for
// common name cn, and this instance's identity token for nonce and the
// key, from the metadata server.
func NewProof(ctx context.Context, key crypto.Signer, cn, nonce string) (Proof, error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn}}, key)
	if err != nil {
		return Proof{}, fmt.Errorf("identity: certificate request: %w", err)
	}
	aud, err := Audience(nonce, key.Public())
	if err != nil {
		return Proof{}, err
	}
	tok, err := Token(ctx, aud)
	if err != nil {
		return Proof{}, err
	}
	return Proof{CSR: csr, Token: tok}, nil
}

// VerifyProof checks p as Verify does, for the key of p's certificate
// request, whose own signature it checks too, and returns the request.
func (v *Verifier) VerifyProof(ctx context.Context, p Proof, want Instance, nonce string) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(p.CSR)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: bad certificate request: %v", ErrRefused, err)
	}
	if _, err := v.Verify(ctx, p.Token, want, nonce, csr.PublicKey); err != nil {
		return nil, err
	}
	return csr, nil
}

// Paths of the enrollment endpoint an instance serves until it has its
// certificate.
const (
	ProofPath       = "/gcefleet/identity/v1/proof"
	CertificatePath = "/gcefleet/identity/v1/certificate"
)

// maxCertificate bounds a certificate chain sent to an instance.
const maxCertificate = 64 << 10

// EnrollHandler serves an instance's enrollment: GET ProofPath answers p
// as JSON, and POST CertificatePath hands accept the PEM certificate the
// verifier signed, answering 204 if accept takes it and 400 with its
// error otherwise. accept is called at most once at a time.
func EnrollHandler(p Proof, accept func(certPEM []byte) error) http.Handler {
	body, _ := json.Marshal(p)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+ProofPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	sem := make(chan struct{}, 1)
	mux.HandleFunc("POST "+CertificatePath, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCertificate))
		if err != nil {
			http.Error(w, "certificate: "+err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		sem <- struct{}{}
		err = accept(b)
		<-sem
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// SelfSigned returns a TLS certificate for key, valid for a day, for an
// instance to serve its enrollment with: the verifier checks that the
// server's key is the one the proof is for.
func SelfSigned(key crypto.Signer, cn string) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &x509.Certificate{Subject: pkix.Name{CommonName: cn}}, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Enroller fetches an instance's proof and hands it its certificate.
type Enroller struct {
	// HTTP fetches; its TLS client must not verify the server's
	// certificate chain (it is self-signed), as the proof's key is
	// checked against it instead. EnrollClient makes one.
	HTTP *http.Client
}

// EnrollClient returns an HTTP client for Enroller: TLS 1.3 without a
// chain check, whose server key Enroll checks against the proof.
func EnrollClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, // the key is pinned to the proof's by Enroll
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 1,
	}}
}

// ErrNotServing is what Proof returns when nothing answers at the
// address yet, as while the instance boots.
var ErrNotServing = errors.New("identity: the instance does not serve its enrollment yet")

// Proof fetches the proof of the instance at addr (host:port), and checks
// that the TLS server it came from holds the proof's key.
func (e *Enroller) Proof(ctx context.Context, addr string) (Proof, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+ProofPath, nil)
	if err != nil {
		return Proof{}, err
	}
	resp, err := e.HTTP.Do(req)
	if err != nil {
		return Proof{}, fmt.Errorf("%w: %v", ErrNotServing, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Proof{}, fmt.Errorf("%w: %v", ErrNotServing, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Proof{}, fmt.Errorf("%w: %s answers %s: %s", ErrRefused, addr, resp.Status, bytes.TrimSpace(b))
	}
	var p Proof
	if err := json.Unmarshal(b, &p); err != nil {
		return Proof{}, fmt.Errorf("%w: %s answers no proof: %v", ErrRefused, addr, err)
	}
	csr, err := x509.ParseCertificateRequest(p.CSR)
	if err != nil {
		return Proof{}, fmt.Errorf("%w: bad certificate request: %v", ErrRefused, err)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || !samePublicKey(resp.TLS.PeerCertificates[0].PublicKey, csr.PublicKey) {
		return Proof{}, fmt.Errorf("%w: %s serves TLS with another key than its proof's", ErrRefused, addr)
	}
	return p, nil
}

// Deliver hands the instance at addr its signed certificate.
func (e *Enroller) Deliver(ctx context.Context, addr string, certPEM []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+CertificatePath, bytes.NewReader(certPEM))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-pem-file")
	resp, err := e.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("handing %s its certificate: %w", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("handing %s its certificate: %s: %s", addr, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// samePublicKey reports whether a and b are the same public key.
func samePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	switch a.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		if e, ok := a.(equaler); ok {
			return e.Equal(b)
		}
	}
	return false
}

// CheckCertificate checks that certPEM is a certificate for key issued by
// the CA in caPEM, for common name cn, as an instance does before it
// serves with it.
func CheckCertificate(certPEM, caPEM []byte, key crypto.Signer, cn string) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate to check it against")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: cn, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("the certificate is not the run CA's for %s: %w", cn, err)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, errors.New("the certificate is for another key than this instance's")
	}
	return cert, nil
}
