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

	"github.com/gcefleet/gcefleet/backend"
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
	cert, err := cas[1].Issue("warm-abcd", &key.PublicKey)
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
