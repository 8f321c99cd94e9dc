package backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gcefleet/gcefleet/claim"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/store"
	"github.com/gcefleet/gcefleet/system/gce/instance"
)

// PoolDimension is the dimension the backend sets, to "true", on the
// catalog entries of a gceboot template's machines: a driver leases pool
// machines by it.
const PoolDimension = provider.PoolDimension

// PoolPort is the port a pool machine's gceboot serves on.
const PoolPort = 8443

// PoolControlPort is the port of a pool machine's control server, where
// the backend retires it and its driver renews its lease's claim. On
// Compute Engine a firewall rule must admit the backend and the drivers
// to it, as to PoolPort.
const PoolControlPort = claim.DefaultControlPort

// poolInfo is what the backend gives its pool machines: the provider's
// public claim key and the fleet CA, and the metadata made of them.
type poolInfo struct {
	ca       *FleetCA
	claimKey string
	meta     map[string]string
	client   *http.Client // the backend's, to retire pool machines
}

// LoadPool loads what gceboot templates need: the deployment's fleet CA,
// from st (made there at the first call; in memory when st is nil), and
// the provider's public claim key. It may be called again: what it has
// loaded it keeps, and it tries again what failed. It fails only if a
// gceboot template is configured and something is missing.
func (j *Jobs) LoadPool(ctx context.Context, st *store.Store) error {
	j.mu.Lock()
	if st != nil {
		j.poolStore = st
	}
	st = j.poolStore
	have := j.pool
	deployment := j.deployment
	j.mu.Unlock()
	if have != nil && have.ca != nil && have.claimKey != "" && have.client != nil {
		return nil
	}
	var p poolInfo
	if have != nil {
		p = *have
	}
	var errs []error
	if p.ca == nil {
		ca, err := LoadFleetCA(ctx, st, deployment)
		if err != nil {
			errs = append(errs, err)
		}
		p.ca = ca
	}
	if p.claimKey == "" && j.Provider != nil {
		k, err := j.Provider.ClaimKey(ctx)
		if err == nil {
			_, err = claim.ParsePublicKey(k.PublicKey)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("the provider's claim key: %w", err))
		} else {
			p.claimKey = k.PublicKey
		}
	}
	if p.ca != nil && p.client == nil {
		c, err := retireClient(p.ca)
		if err != nil {
			errs = append(errs, err)
		}
		p.client = c
	}
	j.mu.Lock()
	if p.ca != nil && p.claimKey != "" {
		p.meta = j.poolMeta(&p)
	}
	j.pool = &p
	j.cfg = j.withPool(j.cfg)
	j.mu.Unlock()
	if err := errors.Join(errs...); err != nil && j.hasGceBoot() {
		return fmt.Errorf("loading what gceboot templates need: %w", err)
	}
	return nil
}

// PreviewPool loads what gceboot templates need from st without making
// anything, for a preview such as Plan: the fleet CA and the provider's
// claim key that serve made there. Before serve made them, a gceboot
// template's revision cannot be computed.
func (j *Jobs) PreviewPool(ctx context.Context, st *store.Store) error {
	if !j.hasGceBoot() {
		return nil
	}
	v, err := st.Get(ctx, fleetCAKey)
	if err != nil {
		return fmt.Errorf("the fleet CA of gceboot templates: %w (serve makes it at its first start)", err)
	}
	var s storedCA
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return fmt.Errorf("the fleet CA in the database (%s): %w", fleetCAKey, err)
	}
	ca, err := s.parse()
	if err != nil {
		return fmt.Errorf("the fleet CA in the database (%s): %w", fleetCAKey, err)
	}
	pub, err := provider.StoredClaimKey(ctx, st)
	if err != nil {
		return fmt.Errorf("the provider's claim key for gceboot templates: %w (the provider makes it at its first start)", err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.pool = &poolInfo{ca: ca, claimKey: claim.EncodePublicKey(pub)}
	j.pool.meta = j.poolMeta(j.pool)
	j.cfg = j.withPool(j.cfg)
	return nil
}

// hasGceBoot says whether a gceboot template is configured.
func (j *Jobs) hasGceBoot() bool {
	return slices.ContainsFunc(j.Config().Templates, func(t Template) bool { return t.GceBoot })
}

// poolMeta returns the metadata of p for gceboot instances; j.mu is held.
func (j *Jobs) poolMeta(p *poolInfo) map[string]string {
	pc := instance.PoolConfig{ClaimKey: p.claimKey, FleetCA: p.ca.CertPEM, Deployment: j.deployment, Listen: ":" + strconv.Itoa(PoolPort),
		Control: ":" + strconv.Itoa(PoolControlPort)}
	meta := map[string]string{instance.PoolKey: pc.Encode()}
	if ep := j.cfg.Settings.Endpoint; ep != "" {
		meta[instance.EndpointKey] = ep
	}
	return meta
}

// withPool returns cfg with the pool metadata on its gceboot templates;
// j.mu is held.
func (j *Jobs) withPool(cfg Config) Config {
	if j.pool == nil || j.pool.meta == nil {
		return cfg
	}
	cfg.Templates = slices.Clone(cfg.Templates)
	for i, t := range cfg.Templates {
		if t.GceBoot {
			cfg.Templates[i].pool, cfg.Templates[i].fleetCA = j.pool.meta, j.pool.ca.CertPEM
		}
	}
	return cfg
}

// fleetCA returns the fleet CA, or nil before LoadPool made it.
func (j *Jobs) fleetCA() *FleetCA {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.pool == nil {
		return nil
	}
	return j.pool.ca
}

// retireClient returns the client the backend retires pool machines
// with: mutual TLS with a fleet certificate of its own.
func retireClient(ca *FleetCA) (*http.Client, error) {
	rc := &renewingCert{ca: ca, name: claim.RetireName, now: time.Now}
	if _, err := rc.get(nil); err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{GetClientCertificate: rc.get, MinVersion: tls.VersionTLS13,
			// A machine that serves a run outlives its fleet certificate,
			// which is valid for hours: the chain is verified here as of
			// the end of its validity if that has passed. A retirement
			// carries no secret, and a machine that is not the one named
			// gains nothing from it.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("the machine gave no certificate")
				}
				leaf, at := cs.PeerCertificates[0], time.Now()
				if at.After(leaf.NotAfter) {
					at = leaf.NotAfter
				}
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: at, DNSName: cs.ServerName}); err != nil {
					return fmt.Errorf("the machine's fleet certificate: %w", err)
				}
				return nil
			}},
		TLSHandshakeTimeout: 5 * time.Second,
	}}, nil
}

// poolAddr records where pool machine name serves.
func (j *Jobs) poolAddr(name, addr string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.poolAddrs == nil || len(j.poolAddrs) > 10*MaxGroupSize {
		j.poolAddrs = map[string]string{}
	}
	j.poolAddrs[name] = addr
}

// retire tells the pool machines whose leases the provider reclaimed that
// their leases ended, before their instances are deleted: a machine not
// yet running a run takes no claim from then on, and one running a run
// kills it, so that the old lessee reaches nothing there, not only once
// the instance is gone (which can take long, or fail). It posts to the
// machine's control server, and to its claim address if that does not
// answer (a machine of an older gceboot, before its claim). A machine
// that does not answer is left to its deletion, and to its own end of the
// lease (it ends its run when its claim expires). It does not wait.
func (j *Jobs) retire(events []store.Event) {
	j.mu.Lock()
	var hc *http.Client
	if j.pool != nil {
		hc = j.pool.client
	}
	targets := map[string]string{}
	for _, e := range events {
		if addr, ok := j.poolAddrs[e.Hostname]; ok && e.Kind == "reclaimed" {
			targets[e.Hostname] = addr
			delete(j.poolAddrs, e.Hostname)
		}
	}
	j.mu.Unlock()
	if hc == nil {
		return
	}
	for name, addr := range targets {
		go func() {
			tr := hc.Transport.(*http.Transport).Clone()
			tr.TLSClientConfig.ServerName = name
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: hc.Timeout}
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return
			}
			var resp *http.Response
			for _, a := range []string{net.JoinHostPort(host, strconv.Itoa(PoolControlPort)), addr} {
				req, rerr := http.NewRequest(http.MethodPost, "https://"+a+claim.RetirePath, nil)
				if rerr != nil {
					return
				}
				if resp, err = c.Do(req); err == nil {
					break
				}
			}
			if err != nil {
				j.Log.Debug("retiring a pool machine", "instance", name, "err", err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				j.Log.Info("retired a pool machine whose lease ended", "instance", name)
			} else {
				j.Log.Warn("retiring a pool machine", "instance", name, "status", resp.Status)
			}
		}()
	}
}

// servesFleet reports whether the pool machine name, instance id, at
// addr answers TLS with a fleet certificate of caPEM for that instance,
// as a driver checks it (claim.CheckMachine): enrolled, warm.
func servesFleet(ctx context.Context, addr, name, id string, caPEM []byte) bool {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no certificate")
			}
			return claim.CheckMachine(cs.PeerCertificates[0], name, id, time.Now())
		}}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
