package backend_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/claim"
	"github.com/gcefleet/gcefleet/identity"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// TestFleetCAPersists: the fleet CA made at the first start is the one a
// restarted backend on the same database signs with, and what it signs
// verifies under it.
func TestFleetCAPersists(t *testing.T) {
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "fleet.db")
	var cas []*backend.FleetCA
	for range 2 {
		st, err := store.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		ca, err := backend.LoadFleetCA(ctx, st, "d-test")
		if err != nil {
			t.Fatal(err)
		}
		cas = append(cas, ca)
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(cas[0].CertPEM, cas[1].CertPEM) {
		t.Fatal("a restarted backend made a new fleet CA: the catalog's machines no longer verify")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := cas[1].Issue("warm-abcd", "1234", &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := identity.CheckCertificate(cert, cas[0].CertPEM, key, "warm-abcd"); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.CheckCertificate(cert, cas[0].CertPEM, key, "warm-other"); err == nil {
		t.Fatal("a fleet certificate verified for another name")
	}
}

// TestFleetCASharedByReplicas: replicas on one PostgreSQL database,
// starting at once, share one fleet CA.
func TestFleetCASharedByReplicas(t *testing.T) {
	ctx := context.Background()
	url := testutil.PostgresURL(t)
	cas := make([]*backend.FleetCA, 4)
	var wg sync.WaitGroup
	for i := range cas {
		st, err := store.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		wg.Go(func() {
			ca, err := backend.LoadFleetCA(ctx, st, "d-test")
			if err != nil {
				t.Error(err)
			}
			cas[i] = ca
		})
	}
	wg.Wait()
	for i, ca := range cas {
		if ca == nil || !bytes.Equal(ca.CertPEM, cas[0].CertPEM) {
			t.Fatalf("replica %d has a fleet CA of its own", i)
		}
	}
}

// TestFleetCertificateShortLivedWithInstance: a fleet certificate is
// valid for hours, not years, and names its instance, which a driver
// checks: the same name's other instance is refused.
func TestFleetCertificateShortLivedWithInstance(t *testing.T) {
	ca, err := backend.LoadFleetCA(context.Background(), nil, "d-test")
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Issue("warm-1", "", &key.PublicKey); err == nil {
		t.Fatal("issued a fleet certificate that names no instance")
	}
	certPEM, err := ca.Issue("warm-1", "77", &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := identity.CheckCertificate(certPEM, ca.CertPEM, key, "warm-1")
	if err != nil {
		t.Fatal(err)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life > backend.FleetCertValidity+time.Minute || life > claim.MaxFleetCertLifetime {
		t.Errorf("a fleet certificate valid for %v, want at most %v", life, backend.FleetCertValidity+time.Minute)
	}
	if d := time.Until(cert.NotBefore); d > -30*time.Second || d < -2*time.Minute {
		t.Errorf("NotBefore %v from now, want about a minute back", d)
	}
	if err := claim.CheckMachine(cert, "warm-1", "77", time.Now()); err != nil {
		t.Errorf("the driver refused the machine's own certificate: %v", err)
	}
	if err := claim.CheckMachine(cert, "warm-1", "78", time.Now()); err == nil {
		t.Error("the driver took a certificate of instance 77 for instance 78 of the same name")
	}
	if err := claim.CheckMachine(cert, "warm-1", "77", cert.NotAfter.Add(time.Second)); err == nil {
		t.Error("the driver took an expired fleet certificate")
	}
}
