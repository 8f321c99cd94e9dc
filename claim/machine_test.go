package claim

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/provider/api"
)

// testCA is a fleet CA of the test's own.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test fleet CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * 365 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a machine certificate of host with uris, valid from nb to na.
func (ca testCA) issue(t *testing.T, host string, uris []*url.URL, nb, na time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host}, URIs: uris,
		NotBefore: nb, NotAfter: na, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestCheckMachine: the driver takes a machine's fleet certificate only
// for the instance its lease names, while valid, and short-lived.
func TestCheckMachine(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	hours := func(h int) time.Time { return now.Add(time.Duration(h) * time.Hour) }
	for _, tc := range []struct {
		name     string
		host     string
		uris     []*url.URL
		nb, na   time.Time
		instance string
		want     string // "" for accepted
	}{
		{"its own", "warm-1", []*url.URL{InstanceURI("11")}, now.Add(-time.Minute), hours(8), "11", ""},
		{"the name's other instance", "warm-1", []*url.URL{InstanceURI("10")}, now.Add(-time.Minute), hours(8), "11", "of instance gcefleet://instance/10, not gcefleet://instance/11"},
		{"name only (the previous version's)", "warm-1", nil, now.Add(-time.Minute), hours(8), "11", "names no instance"},
		{"another host", "warm-2", []*url.URL{InstanceURI("11")}, now.Add(-time.Minute), hours(8), "11", "warm-1"},
		{"expired", "warm-1", []*url.URL{InstanceURI("11")}, hours(-9), hours(-1), "11", "not now"},
		{"not yet valid", "warm-1", []*url.URL{InstanceURI("11")}, hours(1), hours(9), "11", "not now"},
		{"valid for years", "warm-1", []*url.URL{InstanceURI("11")}, now.Add(-time.Minute), hours(24 * 3650), "11", "longer than"},
		{"no instance to check by", "warm-1", []*url.URL{InstanceURI("11")}, now.Add(-time.Minute), hours(8), "", "no instance id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ca.issue(t, tc.host, tc.uris, tc.nb, tc.na)
			err := CheckMachine(c.Leaf, "warm-1", tc.instance, now)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("CheckMachine = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestPresentRefusesAnotherInstance: a machine that serves a fleet
// certificate of its name but another instance (one deleted with its
// key) gets nothing: not the claim, not the run's CA.
func TestPresentRefusesAnotherInstance(t *testing.T) {
	ca := newTestCA(t)
	_, pk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Sign(pk, Claim{Lease: "l-1", Hostname: "warm-1", Lessee: "me", Expires: time.Now().Add(time.Minute), Instance: "11"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		uri  string
		ok   bool
	}{{"its own", "11", true}, {"the name's old instance", "10", false}} {
		t.Run(tc.name, func(t *testing.T) {
			posted := false
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				posted = true
				http.Error(w, "test server", http.StatusTeapot)
			}))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "warm-1", []*url.URL{InstanceURI(tc.uri)}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))}}
			srv.StartTLS()
			defer srv.Close()
			host, port, err := net.SplitHostPort(srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			p, err := strconv.Atoi(port)
			if err != nil {
				t.Fatal(err)
			}
			conn := api.Connection{Address: host, Port: p, CACert: string(ca.pem)}
			_, err = Present(context.Background(), conn, "warm-1", tok, ca.pem, func(crypto.PublicKey) ([]byte, error) { return nil, nil })
			if err == nil {
				t.Fatal("Present succeeded against a test server that answers 418")
			}
			if posted != tc.ok {
				t.Errorf("the machine got the claim: %v, want %v (err %v)", posted, tc.ok, err)
			}
			if !tc.ok && !strings.Contains(err.Error(), "not gcefleet://instance/11") {
				t.Errorf("Present = %v, want it to say the certificate is not instance 11's", err)
			}
		})
	}
}

// TestVerifyMachine: a machine being claimed must present a fleet
// certificate valid now; one that serves the driver's run may present
// one that has expired since (runs outlive their hours), but still only
// of the fleet CA and of the instance the run is on.
func TestVerifyMachine(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	now := time.Now()
	hours := func(h int) time.Time { return now.Add(time.Duration(h) * time.Hour) }
	// Within the test CA's validity, which began an hour ago.
	mins := func(m int) time.Time { return now.Add(time.Duration(m) * time.Minute) }
	inst := []*url.URL{InstanceURI("42")}
	for _, tc := range []struct {
		name    string
		cert    tls.Certificate
		running bool
		ok      bool
	}{
		{"valid, being claimed", ca.issue(t, "m-1", inst, hours(-1), hours(7)), false, true},
		{"expired, being claimed", ca.issue(t, "m-1", inst, mins(-50), mins(-10)), false, false},
		{"expired, serving the run", ca.issue(t, "m-1", inst, mins(-50), mins(-10)), true, true},
		{"expired, serving the run, another instance", ca.issue(t, "m-1", []*url.URL{InstanceURI("43")}, mins(-50), mins(-10)), true, false},
		{"expired, serving the run, another CA", other.issue(t, "m-1", inst, mins(-50), mins(-10)), true, false},
		{"not yet valid, serving the run", ca.issue(t, "m-1", inst, hours(1), hours(8)), true, false},
		{"another host, serving the run", ca.issue(t, "m-2", inst, hours(-1), hours(7)), true, false},
	} {
		err := VerifyMachine([]*x509.Certificate{tc.cert.Leaf}, roots, "m-1", "42", tc.running, now)
		if (err == nil) != tc.ok {
			t.Errorf("%s: VerifyMachine = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
	if err := VerifyMachine(nil, roots, "m-1", "42", true, now); err == nil {
		t.Error("VerifyMachine took a machine that gave no certificate")
	}
}
