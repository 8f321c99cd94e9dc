package identity_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/identity"
)

// testCA is a CA as the driver's run has one.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "run CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca testCA) issue(t *testing.T, cn string, pub any) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestInstanceTakesOnlyItsCertificate: an instance accepts only a
// certificate of the run's CA, for its own key and name; its enrollment
// endpoint refuses anything else with 400 and takes the right one.
func TestInstanceTakesOnlyItsCertificate(t *testing.T) {
	run, other := newCA(t), newCA(t)
	key, otherKey := newKey(t), newKey(t)
	for _, tc := range []struct {
		what string
		cert []byte
	}{
		{"another CA's", other.issue(t, "vm-a", key.Public())},
		{"for another key", run.issue(t, "vm-a", otherKey.Public())},
		{"for another name", run.issue(t, "vm-b", key.Public())},
		{"not a certificate", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")},
	} {
		if _, err := identity.CheckCertificate(tc.cert, run.pem, key, "vm-a"); err == nil {
			t.Errorf("a certificate %s was accepted", tc.what)
		}
	}
	good := run.issue(t, "vm-a", key.Public())
	if _, err := identity.CheckCertificate(good, run.pem, key, "vm-a"); err != nil {
		t.Fatalf("the run's certificate for the key: %v", err)
	}

	var got []byte
	h := identity.EnrollHandler(identity.Proof{CSR: []byte{1}, Token: "t"}, func(c []byte) error {
		if _, err := identity.CheckCertificate(c, run.pem, key, "vm-a"); err != nil {
			return err
		}
		got = c
		return nil
	})
	post := func(body []byte) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", identity.CertificatePath, strings.NewReader(string(body))))
		return rec.Code
	}
	if code := post(other.issue(t, "vm-a", key.Public())); code != http.StatusBadRequest || got != nil {
		t.Errorf("another CA's certificate: %d", code)
	}
	if code := post([]byte(strings.Repeat("x", 100<<10))); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a huge body: %d", code)
	}
	if code := post(good); code != http.StatusNoContent || string(got) != string(good) {
		t.Errorf("the run's certificate: %d", code)
	}
}
