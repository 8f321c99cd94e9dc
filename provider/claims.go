package provider

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/gcefleet/gcefleet/claim"
	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/store"
)

// claimKeyKey is where the provider's claim key (an ed25519 seed) is kept
// in the store: made by the first replica that needs it, shared by all.
const claimKeyKey = "provider/claim-key"

// PoolDimension marks a pool machine: a catalog entry with it set to
// "true" is a warm gceboot machine, whose leases carry a claim.
const PoolDimension = "gceboot"

// claimKeys caches the claim key once read or made.
type claimKeys struct {
	mu  sync.Mutex
	key ed25519.PrivateKey
}

// ClaimKey returns the provider's claim key, making it the first time
// any replica on this database asks: replicas racing at once all get the
// one stored first.
func (s *Server) ClaimKey(ctx context.Context) (ed25519.PrivateKey, error) {
	s.claims.mu.Lock()
	defer s.claims.mu.Unlock()
	if s.claims.key != nil {
		return s.claims.key, nil
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	stored, err := s.st.PutIfAbsent(ctx, claimKeyKey, base64.RawStdEncoding.EncodeToString(seed))
	if err != nil {
		return nil, fmt.Errorf("the provider's claim key: %w", err)
	}
	b, err := base64.RawStdEncoding.DecodeString(stored)
	if err != nil || len(b) != ed25519.SeedSize {
		return nil, fmt.Errorf("the provider's claim key in the database (%s) is not an ed25519 seed: delete it to make a new one (leases in force then lose their claims)", claimKeyKey)
	}
	s.claims.key = ed25519.NewKeyFromSeed(b)
	return s.claims.key, nil
}

// isPool reports whether m is a pool machine of a backend trusted with
// them.
func (s *Server) isPool(m *api.Machine) bool {
	return m != nil && slices.Contains(m.Dimensions[PoolDimension], "true") && s.poolBackends[m.Backend]
}

// PoolBackendDimension names, on a pool machine's catalog entry, the
// backend that owns it. The provider sets it (a backend cannot name
// another), so that a lease that asks for it (a driver's -pool.backend)
// is fulfilled only by that backend's machines: a machine of another
// that the driver refused would be released, and so deleted, for
// nothing.
const PoolBackendDimension = "pool_backend"

// checkPool refuses a pool machine of a backend not trusted with them:
// a driver hands a pool machine its run, and trusts the machine by the
// CA its catalog entry names. A trusted backend's pool machine names its
// instance, which its claims bind, and the backend's fleet CA: the one
// its first pool machine named, pinned from then on, so that a holder
// of the backend's token cannot have drivers trust a CA of its own (it
// would be handed their runs' certificates). It sets a pool machine's
// PoolBackendDimension to its backend.
func (s *Server) checkPool(ctx context.Context, fields map[string]string, prefix string, m *api.Machine) error {
	if _, ok := m.Dimensions[PoolDimension]; ok && !s.poolBackends[m.Backend] {
		fields[prefix+"dimensions."+PoolDimension] = fmt.Sprintf("backend %q may not catalog pool machines, to which drivers hand their runs: set pool: true on its token in the provider's config if it is trusted with every pool run", m.Backend)
		return nil
	}
	v, named := m.Dimensions[PoolBackendDimension]
	switch {
	case !slices.Contains(m.Dimensions[PoolDimension], "true"):
		if named {
			fields[prefix+"dimensions."+PoolBackendDimension] = "the provider sets it on pool machines (gceboot=true) only; leave it out"
		}
		return nil
	case named && !(len(v) == 1 && v[0] == m.Backend):
		fields[prefix+"dimensions."+PoolBackendDimension] = fmt.Sprintf("the provider sets it to the machine's backend, %q; leave it out", m.Backend)
	default:
		m.Dimensions[PoolBackendDimension] = []string{m.Backend}
	}
	if id := m.Dimensions["instance_id"]; len(id) != 1 || id[0] == "" {
		fields[prefix+"dimensions.instance_id"] = "a pool machine names its Compute Engine instance id (one value), which its claims bind"
	}
	ca, err := certificateDER(m.Connection.CACert)
	if err != nil {
		fields[prefix+"connection.ca_cert"] = "a pool machine names its backend's fleet CA certificate (PEM): " + err.Error()
		return nil
	}
	key := fleetCAKey + m.Backend
	pinned, err := s.st.PutIfAbsent(ctx, key, base64.StdEncoding.EncodeToString(ca))
	if err != nil {
		return fmt.Errorf("the fleet CA of backend %s: %w", m.Backend, err)
	}
	if pinned != base64.StdEncoding.EncodeToString(ca) {
		fields[prefix+"connection.ca_cert"] = fmt.Sprintf("not the fleet CA of backend %q's pool machines, pinned when it cataloged its first: a backend whose database was reset has a new fleet CA; once none of its old pool machines is leased, an admin removes the pin (delete key %q from the provider database's kv table)", m.Backend, key)
	}
	return nil
}

// fleetCAKey, with a backend's name after it, is where the provider
// keeps the fleet CA that backend's pool machines are trusted by.
const fleetCAKey = "pool-fleet-ca/"

// PinFleetCA sets the fleet CA (PEM) that backend's pool machines must
// name, replacing any pinned before: serve's own backend, whose CA is in
// this database, pins it at start, so that its pin never rests on the
// first machine cataloged (which anyone with its token could race to
// catalog). Other backends' pins are taken from their first pool machine.
func (s *Server) PinFleetCA(ctx context.Context, backend string, caPEM []byte) error {
	ca, err := certificateDER(string(caPEM))
	if err != nil {
		return fmt.Errorf("pinning the fleet CA of backend %s: %w", backend, err)
	}
	if err := s.st.Put(ctx, fleetCAKey+backend, base64.StdEncoding.EncodeToString(ca), store.Fence{}); err != nil {
		return fmt.Errorf("pinning the fleet CA of backend %s: %w", backend, err)
	}
	return nil
}

// pinnedCA reports whether pool machine m names its backend's pinned
// fleet CA: a claim goes only to such a machine, so that one cataloged
// before the pin was (or with the CA of a pin since replaced) gets no
// driver's run.
func (s *Server) pinnedCA(ctx context.Context, m *api.Machine) (bool, error) {
	ca, err := certificateDER(m.Connection.CACert)
	if err != nil {
		return false, nil
	}
	pinned, err := s.st.Get(ctx, fleetCAKey+m.Backend)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("the fleet CA of backend %s: %w", m.Backend, err)
	}
	return pinned == base64.StdEncoding.EncodeToString(ca), nil
}

// certificateDER returns the one certificate of PEM text p.
func certificateDER(p string) ([]byte, error) {
	block, rest := pem.Decode([]byte(p))
	if block == nil || block.Type != "CERTIFICATE" || strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("want one PEM certificate")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return nil, err
	}
	return block.Bytes, nil
}

// checkPoolRequest refuses a lease request whose PoolBackendDimension
// names no backend trusted with pool machines, or that asks for it
// without gceboot=true: nothing would ever come.
func (s *Server) checkPoolRequest(fields map[string]string, d api.Dimensions) {
	v, ok := d[PoolBackendDimension]
	if !ok {
		return
	}
	key := "dimensions." + PoolBackendDimension
	if !slices.Contains(d[PoolDimension], "true") {
		fields[key] = fmt.Sprintf("only pool machines (%s=true) have it: ask for %s=true too", PoolDimension, PoolDimension)
		return
	}
	for _, b := range v {
		if !s.poolBackends[b] {
			names := slices.Sorted(maps.Keys(s.poolBackends))
			fields[key] = fmt.Sprintf("no backend %q serves pool machines: name one whose token has pool: true in the provider's config (%s)", b, strings.Join(names, ", "))
			return
		}
	}
}

// poolDemand returns sets as backend sees them: the sets whose
// PoolBackendDimension names another backend are not its to grow for,
// and in the others it is implied (its groups' dimensions do not have
// it: the provider sets it).
func poolDemand(sets []api.DemandSet, backend string) []api.DemandSet {
	out := make([]api.DemandSet, 0, len(sets))
	for _, d := range sets {
		if v, ok := d.Dimensions[PoolBackendDimension]; ok {
			if !slices.Contains(v, backend) {
				continue
			}
			d.Dimensions = maps.Clone(d.Dimensions)
			delete(d.Dimensions, PoolBackendDimension)
		}
		out = append(out, d)
	}
	return out
}

// withClaim returns l with its claim, if it is a fulfilled lease of a pool
// machine with an expiry. Callers give it only to the lease's client or
// an admin. The claim is not stored: ed25519 signatures are
// deterministic, so every read of a lease signs the same token.
func (s *Server) withClaim(ctx context.Context, l api.Lease) (api.Lease, error) {
	l.Claim = ""
	if l.State != api.Fulfilled || l.ExpiresAt.IsZero() || !s.isPool(l.Machine) {
		return l, nil
	}
	if ok, err := s.pinnedCA(ctx, l.Machine); err != nil || !ok {
		if err == nil {
			s.log.Warn("no claim for a pool machine that does not name its backend's pinned fleet CA", "machine", l.Hostname, "backend", l.Machine.Backend, "lease", l.ID)
		}
		return l, err
	}
	key, err := s.ClaimKey(ctx)
	if err != nil {
		return l, err
	}
	c := claim.Claim{Lease: l.ID, Hostname: l.Hostname, Lessee: l.Client, Expires: l.ExpiresAt}
	if id := l.Machine.Dimensions["instance_id"]; len(id) == 1 {
		c.Instance = id[0]
	}
	tok, err := claim.Sign(key, c)
	if err != nil {
		return l, fmt.Errorf("the claim of lease %s: %w", l.ID, err)
	}
	l.Claim = tok
	return l, nil
}

// writeLease answers with l and its claim.
func (s *Server) writeLease(w http.ResponseWriter, r *http.Request, l api.Lease) error {
	l, err := s.withClaim(r.Context(), l)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, l)
}

// getClaimKey answers with the public half of the claim key, which a
// backend gives its pool machines so that they can check claims.
func (s *Server) getClaimKey(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	key, err := s.ClaimKey(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.ClaimKey{Algorithm: "ed25519", PublicKey: claim.EncodePublicKey(key.Public().(ed25519.PublicKey))})
}

// StoredClaimKey returns the public half of the claim key kept in st,
// without making one: store.ErrNotFound before a provider made it. It is
// for readers that change nothing, such as gcefleet plan.
func StoredClaimKey(ctx context.Context, st *store.Store) (ed25519.PublicKey, error) {
	v, err := st.Get(ctx, claimKeyKey)
	if err != nil {
		return nil, err
	}
	b, err := base64.RawStdEncoding.DecodeString(v)
	if err != nil || len(b) != ed25519.SeedSize {
		return nil, fmt.Errorf("the provider's claim key in the database (%s) is not an ed25519 seed", claimKeyKey)
	}
	return ed25519.NewKeyFromSeed(b).Public().(ed25519.PublicKey), nil
}
