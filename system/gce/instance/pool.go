package instance

import (
	"context"
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
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"cloud.google.com/go/compute/metadata"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/claim"
	"github.com/gcefleet/gcefleet/identity"
)

// PoolKey is the metadata key of a warm pool machine's PoolConfig, which
// a backend's gceboot template sets. It holds only public things.
const PoolKey = "gcefleet-pool"

// PoolConfig is what a pool machine learns from its metadata.
type PoolConfig struct {
	// ClaimKey is the provider's public claim key (base64 ed25519), which
	// signs the claims the machine takes.
	ClaimKey string `json:"claim_key"`
	// FleetCA is the deployment's fleet CA certificate (PEM), which
	// issues the machine's fleet certificate.
	FleetCA []byte `json:"fleet_ca"`
	// Deployment is the deployment's id, which the machine's identity
	// token for its enrollment binds (its nonce). Machines of the
	// previous version's templates have it under "nonce", which
	// DecodePoolConfig still reads: warm ones run in a fleet upgraded
	// under them.
	Deployment string `json:"deployment"`
	// Listen is the address the machine serves on, such as ":8443".
	Listen string `json:"listen"`
	// Control is the address of the machine's control server, such as
	// ":8444" (the default): from enrollment until the instance goes, it
	// takes the backend's retirement and the driver's renewals of the
	// lease (claim.RetirePath, claim.RenewPath). The run's own address
	// is the run program's, so the machine's end of the lease is served
	// beside it.
	Control string `json:"control,omitempty"`
	// Timeout is how long the run's bootstrap waits for the driver's
	// first keepalive, at least (the claim's expiry is the floor); zero
	// means DefaultPoolTimeout.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// DefaultPoolTimeout is how long a claimed machine's bootstrap waits for
// the driver's first keepalive unless PoolConfig says otherwise: the
// pool system's keepalive timeout.
const DefaultPoolTimeout = 30 * time.Second

// Encode returns c as metadata holds it.
func (c PoolConfig) Encode() string {
	b, _ := json.Marshal(c)
	return string(b)
}

// DecodePoolConfig parses what Encode returned.
func DecodePoolConfig(s string) (PoolConfig, error) {
	var c PoolConfig
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		return c, fmt.Errorf("bad %s in the instance metadata: %w", PoolKey, err)
	}
	if c.Deployment == "" {
		var old struct {
			Nonce string `json:"nonce"`
		}
		if json.Unmarshal([]byte(s), &old) == nil {
			c.Deployment = old.Nonce
		}
	}
	if _, err := claim.ParsePublicKey(c.ClaimKey); err != nil {
		return c, fmt.Errorf("%s in the instance metadata: claim_key: %w", PoolKey, err)
	}
	if len(c.FleetCA) == 0 || c.Deployment == "" || c.Listen == "" {
		return c, fmt.Errorf("%s in the instance metadata lacks the fleet CA, deployment or address", PoolKey)
	}
	if c.Control == "" {
		c.Control = ":" + strconv.Itoa(claim.DefaultControlPort)
	}
	return c, nil
}

// Pool returns this machine's PoolConfig from the metadata server, and ok
// false when the metadata has none (the machine is not a pool machine),
// asking again while the metadata server does not answer, until ctx ends.
func Pool(ctx context.Context) (c PoolConfig, ok bool, err error) {
	for {
		v, err := metadata.InstanceAttributeValueWithContext(ctx, PoolKey)
		var undef metadata.NotDefinedError
		switch {
		case err == nil:
			c, err := DecodePoolConfig(v)
			return c, true, err
		case errors.As(err, &undef):
			return PoolConfig{}, false, nil
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return PoolConfig{}, false, fmt.Errorf("reading %s from the metadata server: %w", PoolKey, err)
		}
	}
}

// ServePool is a warm pool machine's life until a driver claims it: it
// enrolls with the backend as Enroll does with a driver (its key made
// here, its identity proven, its fleet certificate signed by the fleet
// CA), then serves TLS with that certificate, taking nothing but a claim:
// a POST to claim.ClaimPath of a claim the provider signed for this
// machine that has not expired, with the run's CA. A second claim is
// refused (409), and a bad one (403). The claimed machine makes a fresh
// key for the run and answers its certificate request; once the run's
// certificate for that key comes (claim.CertificatePath), ServePool
// returns the run's configuration and the listener to serve the run's
// bootstrap on, the same address. A claimed machine whose run
// certificate does not come before the claim expires calls exit.
// Without a claim it waits until ctx ends.
//
// From enrollment on, the machine also serves its control server on
// pc.Control (same certificate): the backend's retirement, and once it is
// claimed the driver's renewals of the lease (claim.RenewPath). The
// returned Control ends the run (see Control.Guard) when the backend
// retires the machine or when the latest claim the machine holds expires
// (after claim.Grace): a lessee whose lease ended reaches nothing on the
// machine, whether or not Compute has deleted it yet.
func ServePool(ctx context.Context, pc PoolConfig, logger *slog.Logger, exit func(int)) (bigmachine.WorkerConfig, net.Listener, *Control, error) {
	var run bigmachine.WorkerConfig
	pub, err := claim.ParsePublicKey(pc.ClaimKey)
	if err != nil {
		return run, nil, nil, err
	}
	fleet, ln, err := Enroll(ctx, BootConfig{CA: pc.FleetCA, Nonce: pc.Deployment, Listen: pc.Listen}, logger)
	if err != nil {
		return run, nil, nil, fmt.Errorf("enrolling with the fleet: %w", err)
	}
	cert, err := tls.X509KeyPair(fleet.Cert, fleet.Key)
	if err != nil {
		ln.Close()
		return run, nil, nil, fmt.Errorf("the fleet certificate: %w", err)
	}
	fleetRoots := x509.NewCertPool()
	if !fleetRoots.AppendCertsFromPEM(pc.FleetCA) {
		ln.Close()
		return run, nil, nil, fmt.Errorf("%s: no fleet CA certificate", PoolKey)
	}
	id, err := metadata.InstanceIDWithContext(ctx)
	if err != nil {
		ln.Close()
		return run, nil, nil, fmt.Errorf("this instance's id from the metadata server: %w", err)
	}
	control := pc.Control
	if control == "" {
		control = ":" + strconv.Itoa(claim.DefaultControlPort)
	}
	cln, err := Listen(control)
	if err != nil {
		ln.Close()
		return run, nil, nil, fmt.Errorf("listening on %s for the control server: %w", control, err)
	}
	h := newHandoff(ln)
	claiming := h.view(false)
	timeout := pc.Timeout
	if timeout <= 0 {
		timeout = DefaultPoolTimeout
	}
	_, cport, _ := net.SplitHostPort(cln.Addr().String())
	ps := &poolServer{name: fleet.Name, id: id, pub: pub, log: logger, done: make(chan bigmachine.WorkerConfig, 1), exit: exit, listen: pc.Listen, timeout: timeout,
		grace: claim.Grace, controlPort: cport}
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler: h,
			// Anyone may connect to claim the machine; a client certificate,
			// if given, must be the fleet CA's (the backend's, to retire it).
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: fleetRoots},
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       time.Minute,
			ErrorLog:          log.New(debugWriter{logger}, "", 0),
		}
	}
	// The control server lives as long as the process: a retired
	// machine answers the backend until it is deleted.
	go newServer(ps.controlHandler()).ServeTLS(cln, "", "")
	srv := &http.Server{
		Handler: ps.handler(),
		// Anyone may connect to claim the machine; a client certificate,
		// if given, must be the fleet CA's (the backend's, to retire it).
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: fleetRoots},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          log.New(debugWriter{logger}, "", 0),
	}
	go srv.ServeTLS(claiming, "", "")
	logger.Info("gceboot warm in the pool, waiting for a claim", "machine", fleet.Name, "addr", ln.Addr().String())
	select {
	case run = <-ps.done:
	case <-ctx.Done():
		srv.Close()
		claiming.Close()
		ln.Close()
		cln.Close()
		return run, nil, nil, fmt.Errorf("no claim: %w", ctx.Err())
	}
	claiming.Close() // no new connection reaches the claim server
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx) // lets the certificate's answer go out
	}()
	return run, h.view(true), &Control{p: ps}, nil
}

// Control is a claimed pool machine's end of its lease.
type Control struct{ p *poolServer }

// Guard has end end the run (bigmachine.Boot.End) when the lease ends for
// the machine: the backend retires it, or the latest claim it holds
// expires. If that happened already, it calls end at once.
func (c *Control) Guard(end func(why string)) {
	p := c.p
	p.mu.Lock()
	p.end = end
	why := p.endWhy
	p.mu.Unlock()
	if why != "" {
		end(why)
	}
}

// poolServer takes one claim and then the run's certificate.
type poolServer struct {
	name    string
	id      string // the instance id
	pub     ed25519.PublicKey
	log     *slog.Logger
	listen  string
	timeout time.Duration
	exit    func(int)
	done    chan bigmachine.WorkerConfig

	mu        sync.Mutex
	claimed   *claim.Claim
	runCA     []byte
	key       *ecdsa.PrivateKey
	delivered bool
	retired   bool // by the backend: no claim is taken
	lapse     *time.Timer

	grace       time.Duration    // after a claim's expiry, before the run ends (claim.Grace)
	controlPort string           // of the control server, for the driver
	end         func(why string) // ends the run (Control.Guard); nil before
	endWhy      string           // why the run ended or must, once it has
}

// controlHandler serves the control server: the lease's renewals and the
// backend's retirement.
func (p *poolServer) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+claim.RenewPath, p.renew)
	mux.HandleFunc("POST "+claim.RetirePath, p.retire)
	return mux
}

// endRun ends the run for why, once; p.mu is held. Before the run's
// certificate was delivered there is no run to end, and the machine takes
// none: the bootstrap is guarded as soon as it is made.
func (p *poolServer) endRun(why string) {
	if p.endWhy != "" {
		return
	}
	p.endWhy = why
	if p.lapse != nil {
		p.lapse.Stop()
	}
	if end := p.end; end != nil {
		// Not under the lock: ending waits for the run's processes.
		go end(why)
	}
}

// arm sets the lease's clock to the claim c's expiry: a claimant that
// never delivers its certificate leaves the machine no use to anyone and
// it goes (exit); a run whose lease lapsed ends, and the machine waits to
// be deleted. p.mu is held.
func (p *poolServer) arm(c claim.Claim) {
	d := time.Until(c.Expires.Add(p.graceNow()))
	if p.lapse != nil {
		p.lapse.Reset(d)
		return
	}
	p.lapse = time.AfterFunc(d, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if time.Now().Before(p.claimed.Expires.Add(p.graceNow())) || p.endWhy != "" {
			return // renewed as the timer fired, or ended already
		}
		if !p.delivered {
			p.log.Error("claimed, but no run certificate came before the claim expired; exiting", "machine", p.name, "lease", p.claimed.Lease)
			p.exit(1)
			return
		}
		p.log.Error("the lease expired with no renewal: ending the run; taking nothing until the backend deletes this instance", "machine", p.name, "lease", p.claimed.Lease, "expired", p.claimed.Expires)
		p.endRun("the lease " + p.claimed.Lease + " expired")
	})
}

// graceNow is how long after the claim's expiry the lease ends for the
// machine: a run has the grace; a claimant that has not delivered its
// certificate by the expiry has none, as it never had. p.mu is held.
func (p *poolServer) graceNow() time.Duration {
	if p.delivered {
		return p.grace
	}
	return 0
}

// renew takes a claim of the machine's lease that expires later than the
// one it holds, and moves the lease's end to the claim's expiry. The
// claim itself is the authority: only the provider signs one.
func (p *poolServer) renew(w http.ResponseWriter, r *http.Request) {
	var req claim.RenewRequest
	if !readRequest(w, r, "renew", &req) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.retired || p.endWhy != "":
		http.Error(w, fmt.Sprintf("machine %s is retired: its lease ended", p.name), http.StatusGone)
		return
	case p.claimed == nil:
		http.Error(w, fmt.Sprintf("machine %s is not claimed: there is no lease to renew", p.name), http.StatusConflict)
		return
	}
	c, err := claim.Verify(p.pub, req.Claim, p.name, time.Now())
	switch {
	case err != nil:
	case c.Instance != p.id:
		err = fmt.Errorf("%w: the claim is for instance %q, not this one (%s)", claim.ErrRefused, c.Instance, p.id)
	case c.Lease != p.claimed.Lease || c.Lessee != p.claimed.Lessee:
		err = fmt.Errorf("%w: the claim is of lease %s of %s, and this machine serves lease %s only", claim.ErrRefused, c.Lease, c.Lessee, p.claimed.Lease)
	case c.Expires.Before(p.claimed.Expires):
		err = fmt.Errorf("%w: the claim expires at %s, before the one this machine holds (%s)", claim.ErrRefused, c.Expires.Format(time.RFC3339Nano), p.claimed.Expires.Format(time.RFC3339Nano))
	}
	if err != nil {
		p.log.Warn("refused a renewal", "machine", p.name, "from", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	if c.Expires.After(p.claimed.Expires) {
		p.claimed = &c
		p.arm(c)
		p.log.Debug("lease renewed", "machine", p.name, "lease", c.Lease, "expires", c.Expires)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (p *poolServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+claim.ClaimPath, p.claim)
	mux.HandleFunc("POST "+claim.CertificatePath, p.certificate)
	mux.HandleFunc("POST "+claim.RetirePath, p.retire)
	return mux
}

// retire takes the backend's word that the machine's lease ended: a
// machine that does not serve a run yet takes no claim from now on, and
// one that does ends it (Control.Guard). Either way the machine serves
// nothing but its control server until the backend deletes it.
func (p *poolServer) retire(w http.ResponseWriter, r *http.Request) {
	// The TLS server verified a client certificate, if given, against
	// the fleet CA, for client authentication (which a machine's fleet
	// certificate does not allow).
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != claim.RetireName {
		http.Error(w, "retire: only the backend, with its fleet certificate, retires a machine", http.StatusForbidden)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.retired {
		// The backend deletes the instance through its group, which
		// would recreate one that deleted itself.
		p.retired = true
		if p.delivered {
			p.log.Info("retired by the backend: the lease ended; ending the run and taking nothing until the backend deletes this instance", "machine", p.name)
			p.endRun("retired by the backend")
		} else {
			p.log.Info("retired by the backend: the lease ended; taking no claim until the backend deletes this instance", "machine", p.name)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// readRequest reads r's body, at most claim.MaxRequest bytes, as JSON
// into v; if it cannot, it answers why (the path's name first) and
// returns false.
func readRequest(w http.ResponseWriter, r *http.Request, what string, v any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, claim.MaxRequest))
	if err != nil {
		http.Error(w, what+": "+err.Error(), http.StatusRequestEntityTooLarge)
		return false
	}
	if err := json.Unmarshal(b, v); err != nil {
		http.Error(w, what+": bad request: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func (p *poolServer) claim(w http.ResponseWriter, r *http.Request) {
	var req claim.ClaimRequest
	if !readRequest(w, r, "claim", &req) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired {
		http.Error(w, fmt.Sprintf("machine %s is retired: its lease ended", p.name), http.StatusGone)
		return
	}
	// The claim is checked before the machine says it is taken, so that
	// one without a good claim learns nothing of its lease.
	c, err := claim.Verify(p.pub, req.Claim, p.name, time.Now())
	if err == nil && c.Instance != p.id {
		err = fmt.Errorf("%w: the claim is for instance %q of name %s, not this one (%s): that instance is gone", claim.ErrRefused, c.Instance, p.name, p.id)
	}
	if err != nil {
		p.log.Warn("refused a claim", "machine", p.name, "from", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	if p.claimed != nil {
		p.log.Warn("refused a second claim", "machine", p.name, "lease", c.Lease, "from", r.RemoteAddr)
		http.Error(w, fmt.Sprintf("machine %s is claimed already: a machine serves one lease, and one claimant, only", p.name), http.StatusConflict)
		return
	}
	if block, _ := pem.Decode(req.CA); block == nil || block.Type != "CERTIFICATE" {
		http.Error(w, "claim: ca: not a PEM certificate (the run's CA)", http.StatusBadRequest)
		return
	} else if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		http.Error(w, "claim: ca: "+err.Error(), http.StatusBadRequest)
		return
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: p.name}, DNSNames: []string{p.name}}, key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.claimed, p.runCA, p.key = &c, req.CA, key
	p.arm(c)
	p.log.Info("claimed", "machine", p.name, "lease", c.Lease, "lessee", c.Lessee, "expires", c.Expires)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(claim.ClaimResponse{CSR: csr, Control: p.controlPort})
}

func (p *poolServer) certificate(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, claim.MaxRequest))
	if err != nil {
		http.Error(w, "certificate: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.retired:
		http.Error(w, fmt.Sprintf("machine %s is retired: its lease ended", p.name), http.StatusGone)
		return
	case p.claimed == nil:
		http.Error(w, fmt.Sprintf("machine %s is not claimed: post a claim to %s first", p.name, claim.ClaimPath), http.StatusConflict)
		return
	case p.delivered:
		http.Error(w, fmt.Sprintf("machine %s has its run certificate already", p.name), http.StatusConflict)
		return
	}
	if _, err := identity.CheckCertificate(b, p.runCA, p.key, p.name); err != nil {
		p.log.Warn("refused a run certificate", "machine", p.name, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	kder, err := x509.MarshalECPrivateKey(p.key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.delivered = true
	p.arm(*p.claimed) // with the run's grace
	// The claim's expiry is the floor of the first keepalive's wait: a
	// driver may claim its machines as their leases come and start them
	// all later, and while its lease stands the machine is its own. A
	// driver that dies lets the lease lapse, and the backend deletes the
	// machine.
	timeout := max(p.timeout, time.Until(p.claimed.Expires))
	p.done <- bigmachine.WorkerConfig{
		Name: p.name, Listen: p.listen, Cert: b, CA: p.runCA, Timeout: timeout,
		Key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
	w.WriteHeader(http.StatusNoContent)
}
