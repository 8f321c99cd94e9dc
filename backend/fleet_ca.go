package backend

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"time"

	"github.com/gcefleet/gcefleet/claim"
	"github.com/gcefleet/gcefleet/store"
)

// fleetCAKey is where the deployment's fleet CA (its key and certificate)
// is kept in the store: made by the first replica that needs it, shared
// by all.
const fleetCAKey = "gce-backend/fleet-ca"

// fleetCAValidity is how long the fleet CA is valid.
const fleetCAValidity = 10 * 365 * 24 * time.Hour

// FleetCertValidity is how long a fleet certificate is valid (from a
// minute back, for clocks that differ): hours, so that the key of a
// machine deleted long ago is no use. A warm machine is not renewed: the
// backend deletes idle pool machines cataloged poolMaxAge ago, well
// before their certificates expire, and its groups make fresh ones. The
// backend's own client certificate is renewed in memory.
const FleetCertValidity = 8 * time.Hour

// A FleetCA issues the fleet certificates of a deployment's pool
// machines: each one's own key, made on the machine, certified once the
// machine proved which instance it is. Drivers verify a pool machine by
// its certificate.
type FleetCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CertPEM is the CA's certificate, which a pool machine's catalog
	// entry carries (Connection.CACert).
	CertPEM []byte
}

type storedCA struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// newFleetCA makes a fleet CA for deployment.
func newFleetCA(deployment string) (*FleetCA, storedCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, storedCA{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "gcefleet fleet CA " + deployment, Organization: []string{"gcefleet"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(fleetCAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, storedCA{}, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, storedCA{}, err
	}
	s := storedCA{
		Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		Key:  string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})),
	}
	ca, err := s.parse()
	return ca, s, err
}

func (s storedCA) parse() (*FleetCA, error) {
	cb, _ := pem.Decode([]byte(s.Cert))
	kb, _ := pem.Decode([]byte(s.Key))
	if cb == nil || kb == nil {
		return nil, errors.New("not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("the key is not the certificate's")
	}
	return &FleetCA{cert: cert, key: key, CertPEM: []byte(s.Cert)}, nil
}

// LoadFleetCA returns the fleet CA of the deployment whose database st
// is, making it at the first call; replicas starting at once all get the
// one stored first. Without a store (nil) it makes one in memory.
func LoadFleetCA(ctx context.Context, st *store.Store, deployment string) (*FleetCA, error) {
	ca, s, err := newFleetCA(deployment)
	if err != nil || st == nil {
		return ca, err
	}
	b, _ := json.Marshal(s)
	v, err := st.PutIfAbsent(ctx, fleetCAKey, string(b))
	if err != nil {
		return nil, fmt.Errorf("the fleet CA: %w", err)
	}
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return nil, fmt.Errorf("the fleet CA in the database (%s): %w", fleetCAKey, err)
	}
	ca, err = s.parse()
	if err != nil {
		return nil, fmt.Errorf("the fleet CA in the database (%s): %w", fleetCAKey, err)
	}
	return ca, nil
}

// Issue returns the fleet certificate of machine name, instance id, for
// pub, the key it made and proved it holds: valid for FleetCertValidity,
// naming the instance as the URI SAN claim.InstanceURI(id), which a
// driver checks (claim.CheckMachine) against the instance its lease
// names.
func (ca *FleetCA) Issue(name, id string, pub crypto.PublicKey) ([]byte, error) {
	if id == "" {
		return nil, fmt.Errorf("the fleet certificate of %s: no instance id", name)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		URIs:         []*url.URL{claim.InstanceURI(id)},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     ca.notAfter(now),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("the fleet certificate of %s: %w", name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// clientCertificate returns a TLS client certificate of the fleet CA for
// name, valid for FleetCertValidity from now, with a key made here and
// kept in memory: the backend's, to retire pool machines (renewed by
// renewingCert).
func (ca *FleetCA) clientCertificate(name string, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     ca.notAfter(now),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("the backend's fleet client certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// renewingCert is the backend's client certificate of a fleet CA, made
// again once two thirds of its validity have passed: the backend runs
// for longer than a fleet certificate is valid.
type renewingCert struct {
	ca   *FleetCA
	name string
	now  func() time.Time

	mu   sync.Mutex
	cert tls.Certificate
}

// get returns the certificate, renewed if it is due; it is a
// tls.Config's GetClientCertificate.
func (r *renewingCert) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if l := r.cert.Leaf; l == nil || now.After(l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore)*2/3)) {
		c, err := r.ca.clientCertificate(r.name, now)
		if err != nil {
			return nil, err
		}
		r.cert = c
	}
	c := r.cert
	return &c, nil
}

// notAfter is when a fleet certificate issued at now expires: after
// FleetCertValidity, and never after the CA.
func (ca *FleetCA) notAfter(now time.Time) time.Time {
	if t := now.Add(FleetCertValidity); t.Before(ca.cert.NotAfter) {
		return t
	}
	return ca.cert.NotAfter
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
