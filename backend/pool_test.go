package backend_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/claim"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

const gcebootImage = "gcr.io/pool-project/gceboot"

const poolYAML = `templates:
  - base_name: warm
    project: pool-project
    dimensions: {os: linux}
    machine_type: e2-standard-2
    container_image: %s:v1
    gceboot: true
    service_accounts: [{email: default, scopes: ["https://www.googleapis.com/auth/cloud-platform"]}]
managers:
  - {template_base_name: warm, zone: us-central1-a, minimum_size: 2, maximum_size: 2}
settings:
  interval: %s
  compute_endpoint: %s
`

// poolWorld is a backend with a gceboot template on the emulator, whose
// instances run the real gceboot, and a real provider.
type poolWorld struct {
	t       *testing.T
	emu     *emulator.Emulator
	compute *gcecompute.Client
	st      *store.Store
	prov    *provider.Server
	api     *client.Client // the backend's
	alice   *client.Client
	bob     *client.Client
	logs    *testutil.SyncBuffer
	out     *testutil.SyncBuffer // what the instances print
}

// newPoolWorld starts it, the backend's jobs running every interval
// (and when kicked).
func newPoolWorld(t *testing.T, interval time.Duration) *poolWorld {
	t.Helper()
	ctx := context.Background()
	boot := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/cmd/gceboot")
	out := &testutil.SyncBuffer{}
	emu, url := testutil.Emulator(t, emulator.Options{Images: map[string]string{gcebootImage: boot}, ProcessOutput: out, StopGrace: 2 * time.Second})
	compute, err := gcecompute.NewClient(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { compute.Close() })
	st, err := store.Open(ctx, ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg, err := provider.ParseConfig("p.yaml", []byte("tokens:\n  - {name: gce, role: backend, token: backend-token-0123456789, pool: true}\n  - {name: alice, role: client, token: client-token-0123456789}\n  - {name: bob, role: client, token: bobbo-token-0123456789}\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := provider.New(st, cfg, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(srv.Close)
	pctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	go p.Run(pctx)
	w := &poolWorld{t: t, emu: emu, compute: compute, st: st, prov: p, logs: &testutil.SyncBuffer{}, out: out,
		api:   &client.Client{BaseURL: srv.URL, Token: "backend-token-0123456789"},
		alice: &client.Client{BaseURL: srv.URL, Token: "client-token-0123456789"},
		bob:   &client.Client{BaseURL: srv.URL, Token: "bobbo-token-0123456789"},
	}
	path := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(poolYAML, gcebootImage, interval, url)), 0o600); err != nil {
		t.Fatal(err)
	}
	bcfg, err := backend.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	bctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	b := backend.Run(bctx, bcfg, compute, w.api, backend.Options{ConfigPath: path, Store: st, Replica: "r1", LeaderTTL: 3 * time.Second},
		slog.New(slog.NewTextHandler(w.logs, nil)))
	t.Cleanup(func() {
		cancel()
		b.Wait()
		if t.Failed() {
			t.Logf("backend logs:\n%s", w.logs.String())
			t.Logf("instance output:\n%s", out.String())
		}
	})
	return w
}

// warm waits for n pool machines in the catalog, available, other than
// those of not, and returns them by hostname.
func (w *poolWorld) warm(n int, not map[string]bool) map[string]store.Machine {
	w.t.Helper()
	var got map[string]store.Machine
	testutil.WaitWithin(w.t, 90*time.Second, fmt.Sprintf("%d warm pool machines in the catalog", n), func() bool {
		ms, err := w.api.Machines(context.Background())
		if err != nil {
			w.t.Fatal(err)
		}
		got = map[string]store.Machine{}
		for _, m := range ms {
			if m.State == store.Available && !not[m.Hostname+"/"+m.Dimensions["instance_id"][0]] {
				got[m.Hostname] = m
			}
		}
		return len(got) >= n
	})
	return got
}

// runCA is a bigmachine run's CA, as a driver holds it.
type runCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newRunCA(t *testing.T) *runCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "run"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &runCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// sign certifies pub as name (bigmachine's StartRequest.Sign).
func (ca *runCA) sign(name string) func(crypto.PublicKey) ([]byte, error) {
	return func(pub crypto.PublicKey) ([]byte, error) {
		n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: n, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, ca.cert, pub, ca.key)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
	}
}

// client returns an HTTP client that speaks to machine name as the run's
// driver, with a certificate of ca.
func (ca *runCA) client(t *testing.T, name string) *http.Client {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.sign("driver")(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS13}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// serves reports whether the bootstrap at addr answers hc over TLS.
func serves(hc *http.Client, addr string) error {
	resp, err := hc.Get("https://" + addr + "/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// fleetClient speaks to a warm machine as anyone may: verifying it by the
// fleet CA, with no certificate of its own.
func fleetClient(t *testing.T, m store.Machine) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(m.Connection.CACert)) {
		t.Fatalf("machine %s: no fleet CA in its connection: %+v", m.Hostname, m.Connection)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: m.Hostname, MinVersion: tls.VersionTLS13}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func addrOf(m store.Machine) string {
	return net.JoinHostPort(m.Connection.Address, strconv.Itoa(m.Connection.Port))
}

func post(t *testing.T, hc *http.Client, url string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := hc.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// lease leases a pool machine for c and returns the lease.
func (w *poolWorld) lease(c *client.Client, id string) api.Lease {
	return w.leaseFor(c, id, 2*time.Minute)
}

// leaseFor leases a pool machine for c for term.
func (w *poolWorld) leaseFor(c *client.Client, id string, term time.Duration) api.Lease {
	w.t.Helper()
	l, err := c.RequestLease(context.Background(), api.LeaseRequest{RequestID: id, Dimensions: api.Dimensions{backend.PoolDimension: {"true"}, "cpus": {"2"}},
		Term: api.Term{Duration: term}})
	if err != nil || l.State != api.Fulfilled || l.Claim == "" || l.Machine == nil {
		w.t.Fatalf("leasing a pool machine: %+v, %v", l, err)
	}
	return l
}

// noPrivateKey fails the test if what holds a private key.
func noPrivateKey(t *testing.T, what string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("PRIVATE KEY")) {
		t.Errorf("%s holds a private key: %s", what, b)
	}
}

// TestPoolMachines: a gceboot template makes warm machines that prove
// who they are, get their fleet certificate and are cataloged with their
// connection and cpus; a lease's claim, presented, starts the run's
// bootstrap on the machine, accepting only the run's CA; everything else
// is refused; and no private key is in any metadata, catalog entry,
// lease or event.
//
// The jobs' interval is longer than the test: enrolment, cataloging and
// the replacement of used machines run because they are kicked.
func TestPoolMachines(t *testing.T) {
	w := newPoolWorld(t, 10*time.Minute)
	ctx := context.Background()
	warm := w.warm(2, nil)
	for _, m := range warm {
		if m.Connection.Port != backend.PoolPort || m.Connection.Address == "" || !strings.Contains(m.Connection.CACert, "BEGIN CERTIFICATE") {
			t.Fatalf("machine %s: connection %+v", m.Hostname, m.Connection)
		}
		if m.Dimensions["cpus"][0] != "2" || m.Dimensions[backend.PoolDimension][0] != "true" || m.Policies.OnReclaim != "DELETE" {
			t.Fatalf("machine %s: dimensions %v, policies %+v", m.Hostname, m.Dimensions, m.Policies)
		}
		in, err := w.compute.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: "pool-project", Zone: "us-central1-a", Instance: m.Hostname})
		if err != nil {
			t.Fatal(err)
		}
		noPrivateKey(t, "instance metadata of "+m.Hostname, in.GetMetadata())
		noPrivateKey(t, "catalog entry "+m.Hostname, m)
	}
	// What the group offers is what it catalogs: a request for pool
	// machines is neither refused nor left unassigned while all are leased.
	offers, err := w.alice.Offers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(offers) != 1 || !slices.Equal(offers[0].Dimensions[backend.PoolDimension], []string{"true"}) || !slices.Equal(offers[0].Dimensions["cpus"], []string{"2"}) {
		t.Errorf("the pool group's offers are %+v; want one with %s=true and cpus=2, as its machines are cataloged", offers, backend.PoolDimension)
	}
	tms, err := gcecompute.All(w.compute.Templates.List(ctx, &computepb.ListInstanceTemplatesRequest{Project: "pool-project"}))
	if err != nil || len(tms) != 1 {
		t.Fatalf("templates: %v, %v", tms, err)
	}
	noPrivateKey(t, "the instance template", tms[0])

	la, lb := w.lease(w.alice, "a"), w.lease(w.bob, "b")
	ma, mb := *la.Machine, *lb.Machine
	hb := fleetClient(t, mb)
	ca := newRunCA(t)
	claimOf := func(tok string) []byte {
		b, _ := json.Marshal(claim.ClaimRequest{Claim: tok, CA: ca.certPEM})
		return b
	}
	key, err := w.prov.ClaimKey(ctx) // the provider's own: the same database
	if err != nil {
		t.Fatal(err)
	}
	_, forger, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(k ed25519.PrivateKey, c claim.Claim) string {
		tok, err := claim.Sign(k, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	instB := mb.Dimensions["instance_id"][0]
	for _, tc := range []struct {
		name, path string
		body       []byte
		want       int
	}{
		{"nothing but a claim", "/", nil, http.StatusNotFound},
		{"a certificate without a claim", claim.CertificatePath, []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), http.StatusConflict},
		{"no claim", claim.ClaimPath, claimOf(""), http.StatusForbidden},
		{"a claim used on another machine", claim.ClaimPath, claimOf(la.Claim), http.StatusForbidden},
		{"an expired claim", claim.ClaimPath, claimOf(sign(key, claim.Claim{Lease: lb.ID, Hostname: mb.Hostname, Lessee: "bob", Expires: time.Now().Add(-time.Second), Instance: instB})), http.StatusForbidden},
		{"a claim of another instance of the name", claim.ClaimPath, claimOf(sign(key, claim.Claim{Lease: lb.ID, Hostname: mb.Hostname, Lessee: "bob", Expires: time.Now().Add(time.Minute), Instance: "1"})), http.StatusForbidden},
		{"a forged claim", claim.ClaimPath, claimOf(sign(forger, claim.Claim{Lease: lb.ID, Hostname: mb.Hostname, Lessee: "bob", Expires: time.Now().Add(time.Minute), Instance: instB})), http.StatusForbidden},
		{"a retire without the backend's certificate", claim.RetirePath, nil, http.StatusForbidden},
		{"an oversized request", claim.ClaimPath, claimOf(strings.Repeat("x", claim.MaxRequest)), http.StatusRequestEntityTooLarge},
	} {
		if code, body := post(t, hb, "https://"+addrOf(mb)+tc.path, tc.body); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
	// The good claim, then a second one.
	code, body := post(t, hb, "https://"+addrOf(mb)+claim.ClaimPath, claimOf(lb.Claim))
	if code != http.StatusOK {
		t.Fatalf("bob's claim: %d %s", code, body)
	}
	var cr claim.ClaimResponse
	if err := json.Unmarshal(body, &cr); err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(cr.CSR)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, hb, "https://"+addrOf(mb)+claim.ClaimPath, claimOf(lb.Claim)); code != http.StatusConflict || strings.Contains(string(body), lb.ID) {
		t.Errorf("a second claim: %d %s, want 409 without the lease's id", code, body)
	}
	// One without a good claim learns nothing of the claimed machine.
	if code, body := post(t, hb, "https://"+addrOf(mb)+claim.ClaimPath, claimOf("not-a-claim")); code != http.StatusForbidden || strings.Contains(string(body), lb.ID) || strings.Contains(string(body), "claimed") {
		t.Errorf("a bad claim to a claimed machine: %d %s, want 403 that says nothing of its lease", code, body)
	}
	other := newRunCA(t)
	wrong, err := other.sign(mb.Hostname)(csr.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, hb, "https://"+addrOf(mb)+claim.CertificatePath, wrong); code != http.StatusBadRequest {
		t.Errorf("a run certificate of another CA: %d %s, want 400", code, body)
	}
	good, err := ca.sign(mb.Hostname)(csr.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, hb, "https://"+addrOf(mb)+claim.CertificatePath, good); code != http.StatusNoContent {
		t.Fatalf("the run certificate: %d %s", code, body)
	}
	testutil.WaitWithin(t, 10*time.Second, "bob's bootstrap to serve", func() bool { return serves(ca.client(t, mb.Hostname), addrOf(mb)) == nil })
	if err := serves(other.client(t, mb.Hostname), addrOf(mb)); err == nil {
		t.Error("a claimed machine served a driver of another run's CA")
	}

	// Alice through Present, as the pool system does.
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := claim.Present(pctx, ma.Connection, mb.Hostname, la.Claim, ca.certPEM, ca.sign(mb.Hostname)); err == nil {
		t.Error("alice's claim presented at bob's machine was taken")
	}
	aca := newRunCA(t)
	addr, err := claim.Present(pctx, ma.Connection, ma.Hostname, la.Claim, aca.certPEM, aca.sign(ma.Hostname))
	if err != nil {
		t.Fatalf("Present: %v", err)
	}
	if err := serves(aca.client(t, ma.Hostname), addr); err != nil {
		t.Fatalf("alice's bootstrap at %s: %v", addr, err)
	}
	for _, c := range []*runCA{ca, other} {
		if err := serves(c.client(t, ma.Hostname), addr); err == nil {
			t.Error("alice's machine served a driver of another run's CA")
		}
	}
	if _, err := claim.Present(pctx, ma.Connection, ma.Hostname, la.Claim, aca.certPEM, aca.sign(ma.Hostname)); err == nil {
		t.Error("a second Present of alice's claim was taken")
	}

	// No private key in any lease or event.
	for _, c := range []*client.Client{w.alice, w.bob} {
		ls, err := c.Leases(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		noPrivateKey(t, "leases", ls)
	}
	evs, err := w.api.Events(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	noPrivateKey(t, "events", evs)

	// Released, a machine is deleted and replaced, and its lease has no
	// claim any more; the old claim reaches nothing.
	used := map[string]bool{}
	for _, l := range []api.Lease{la, lb} {
		used[l.Hostname+"/"+l.Machine.Dimensions["instance_id"][0]] = true
		c := w.alice
		if l.Client == "bob" {
			c = w.bob
		}
		rel, err := c.Release(ctx, l.ID)
		if err != nil || rel.Claim != "" {
			t.Fatalf("release: %+v, %v", rel, err)
		}
	}
	testutil.WaitWithin(t, 60*time.Second, "the used machines to be deleted", func() bool {
		for _, m := range []store.Machine{ma, mb} {
			_, err := w.compute.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: "pool-project", Zone: "us-central1-a", Instance: m.Hostname})
			if gcecompute.Classify(err) != gcecompute.NotFound {
				return false
			}
		}
		return true
	})
	fresh := w.warm(2, used)
	for host := range fresh {
		if host == ma.Hostname || host == mb.Hostname {
			t.Errorf("a used machine's name %s came back", host)
		}
	}
	if l, err := w.alice.Lease(ctx, la.ID, 0); err != nil || l.Claim != "" {
		t.Errorf("alice's released lease: %+v, %v; want no claim", l, err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	if _, err := claim.Present(cctx, ma.Connection, ma.Hostname, la.Claim, aca.certPEM, aca.sign(ma.Hostname)); err == nil {
		t.Error("the claim of a released lease was taken")
	}

	// A lease released before its machine was claimed: the backend
	// retires the machine at once, and its claim is refused there while
	// the instance is being deleted.
	lc := w.lease(w.alice, "c")
	mc := *lc.Machine
	// Deleting takes a while, as on Compute Engine.
	if err := w.emu.AddFault(emulator.Fault{Method: "compute.instanceGroupManagers.deleteInstances", Latency: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.alice.Release(ctx, lc.ID); err != nil {
		t.Fatal(err)
	}
	retired := false
	testutil.WaitWithin(t, 30*time.Second, "the released machine to be retired or deleted", func() bool {
		// Machines serving a run, retired before, say so too.
		if strings.Contains(w.out.String(), "retired by the backend: the lease ended; taking no claim until the backend deletes this instance\" machine="+mc.Hostname) {
			retired = true
			return true
		}
		_, err := w.compute.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: "pool-project", Zone: "us-central1-a", Instance: mc.Hostname})
		return gcecompute.Classify(err) == gcecompute.NotFound
	})
	if !retired {
		t.Fatal("the instance was deleted before the backend retired it")
	}
	if _, err := claim.Present(cctx, mc.Connection, mc.Hostname, lc.Claim, aca.certPEM, aca.sign(mc.Hostname)); !errors.Is(err, claim.ErrRefused) {
		t.Errorf("the claim of a lease released before its machine was claimed, at the retired machine: %v, want it refused", err)
	}
}

// TestPoolMachineGoesWithoutItsDriver: a claimed machine whose driver
// sends no keepalive exits and deletes its instance; its lease ends, a
// fresh machine takes its place, and the old claim is no claim of the
// instance made under its name.
func TestPoolMachineGoesWithoutItsDriver(t *testing.T) {
	w := newPoolWorld(t, time.Second)
	ctx := context.Background()
	w.warm(2, nil)
	// Claimed, but no run certificate comes: the machine goes when the
	// claim expires.
	short, err := w.bob.RequestLease(ctx, api.LeaseRequest{RequestID: "short", Dimensions: api.Dimensions{backend.PoolDimension: {"true"}},
		Term: api.Term{Duration: 3 * time.Second}})
	if err != nil || short.Claim == "" {
		t.Fatalf("a short lease: %+v, %v", short, err)
	}
	body, _ := json.Marshal(claim.ClaimRequest{Claim: short.Claim, CA: newRunCA(t).certPEM})
	if code, b := post(t, fleetClient(t, *short.Machine), "https://"+addrOf(*short.Machine)+claim.ClaimPath, body); code != http.StatusOK {
		t.Fatalf("the short lease's claim: %d %s", code, b)
	}
	testutil.WaitWithin(t, 30*time.Second, "the claimed machine without its run certificate to exit", func() bool {
		return strings.Contains(w.out.String(), "no run certificate came before the claim expired")
	})
	if _, err := w.bob.Release(ctx, short.ID); err != nil {
		t.Fatal(err)
	}

	// A lease shorter than the first keepalive's wait (30 s): the
	// machine goes when that wait lapses, before the lease does.
	l := w.leaseFor(w.alice, "silent", 10*time.Second)
	m := *l.Machine
	id := m.Dimensions["instance_id"][0]
	ca := newRunCA(t)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	addr, err := claim.Present(pctx, m.Connection, m.Hostname, l.Claim, ca.certPEM, ca.sign(m.Hostname))
	if err != nil {
		t.Fatal(err)
	}
	if err := serves(ca.client(t, m.Hostname), addr); err != nil {
		t.Fatal(err)
	}
	// No keepalive: the bootstrap's first-keepalive wait (30 s) lapses.
	testutil.WaitWithin(t, 90*time.Second, "the machine to delete its instance", func() bool {
		if strings.Contains(w.out.String(), "no keepalive from the driver") {
			return true
		}
		in, err := w.compute.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: "pool-project", Zone: "us-central1-a", Instance: m.Hostname})
		return gcecompute.Classify(err) == gcecompute.NotFound || (err == nil && strconv.FormatUint(in.GetId(), 10) != id)
	})
	testutil.WaitWithin(t, 60*time.Second, "the lease to end", func() bool {
		got, err := w.alice.Lease(ctx, l.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		return got.State != api.Fulfilled && got.Claim == ""
	})
	fresh := w.warm(2, map[string]bool{m.Hostname + "/" + id: true})
	if n, ok := fresh[m.Hostname]; ok {
		// Recreated under its name: the old claim names the old instance.
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		_, err := claim.Present(cctx, n.Connection, n.Hostname, l.Claim, ca.certPEM, ca.sign(n.Hostname))
		if !errors.Is(err, claim.ErrRefused) {
			t.Errorf("the old claim at the instance recreated under its name: %v, want it refused", err)
		}
		t.Logf("recreated under its name; the old claim: %v", err)
	}
}

// TestClaimedMachineWaitsWhileLeased: a driver may claim its machines as
// their leases come and start them later; a claimed machine waits for
// its first keepalive as long as its claim (the lease) lasts, beyond the
// usual 30 s.
func TestClaimedMachineWaitsWhileLeased(t *testing.T) {
	w := newPoolWorld(t, time.Second)
	ctx := context.Background()
	w.warm(1, nil)
	l := w.leaseFor(w.alice, "patient", 50*time.Second)
	ca := newRunCA(t)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	addr, err := claim.Present(pctx, l.Machine.Connection, l.Hostname, l.Claim, ca.certPEM, ca.sign(l.Hostname))
	if err != nil {
		t.Fatal(err)
	}
	claimed := time.Now()
	hc := ca.client(t, l.Hostname)
	// Past the 30 s wait of a machine whose claim would not last.
	testutil.WaitWithin(t, time.Minute, "40 s to pass with the machine serving", func() bool {
		if err := serves(hc, addr); err != nil {
			t.Fatalf("%s after the claim, the machine no longer serves: %v", time.Since(claimed).Round(time.Second), err)
		}
		return time.Since(claimed) > 40*time.Second
	})
}
