package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// TestServeOverTLS serves the API over TLS with a GCE Backend in the same
// process: clients that trust the certificate lease the machines the
// backend cataloged (the backend reached the API over TLS too), and a
// client speaking plain HTTP gets nothing of the API.
func TestServeOverTLS(t *testing.T) {
	dir := t.TempDir()
	writeFleet(t, dir)
	cert, err := testutil.SelfSigned("provider.internal")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM := testutil.CertPEM(cert)
	testutil.WriteFile(t, filepath.Join(dir, "provider.pem"), certPEM)
	testutil.WriteFile(t, filepath.Join(dir, "provider.key"), keyPEM)
	config := filepath.Join(dir, "provider.yaml")
	testutil.WriteFile(t, config, []byte(fmt.Sprintf(providerCfg, filepath.Join(dir, "p.db"))+
		"backend: {config: fleet.yaml, token: gce}\ntls: {cert_file: provider.pem, key_file: provider.key}\n"))
	url, _ := serveUntil(t, config)
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("serve printed %q, want an https:// URL", url)
	}
	// The certificate names provider.internal, not the listening address.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: testutil.CertPool(cert), ServerName: "provider.internal"}}}
	t.Cleanup(hc.CloseIdleConnections)
	ctx := context.Background()
	admin := &client.Client{BaseURL: url, Token: adminToken, HTTP: hc}
	alice := &client.Client{BaseURL: url, Token: aliceToken, HTTP: hc}
	testutil.WaitFor(t, "the backend to catalog its group's instances over TLS", func() bool {
		ms, err := admin.Machines(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(ms) == 2
	})
	l, err := alice.RequestLease(ctx, store.LeaseRequest{RequestID: "r", Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: 1e12}})
	if err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease over TLS: %+v, %v", l, err)
	}
	plain := &client.Client{BaseURL: "http://" + strings.TrimPrefix(url, "https://"), Token: aliceToken}
	if _, err := plain.Leases(ctx, false); err == nil {
		t.Error("the API answered plain HTTP")
	}
}
