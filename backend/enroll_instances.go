package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/identity"
)

// EnrollInstances is the enroll-instances job. For each running instance
// of a gceboot template's group that is not cataloged yet, it fetches the
// proof the instance's gceboot serves (a certificate request for a key
// made on the instance, and its identity token binding the deployment id
// and that key), verifies it against Google's published keys (the
// emulator's, on the emulator) and the instance's project, zone, id and
// name from the group's listing, signs the request with the fleet CA and
// hands the instance its fleet certificate. No private key travels. An
// instance that does not answer yet (booting) is tried at the next run;
// one whose proof is refused is not certified, and so never cataloged. It
// reports how many it enrolled, and how many instances of the groups are
// neither cataloged nor enrolled yet (booting, or not answering).
func (j *Jobs) EnrollInstances(ctx context.Context) (enrolled, waiting int, err error) {
	if !j.hasGceBoot() {
		return 0, 0, nil
	}
	if err := j.LoadPool(ctx, nil); err != nil {
		return 0, 0, err
	}
	ca := j.fleetCA()
	gs, err := j.groups()
	if err != nil {
		return 0, 0, err
	}
	st := j.state()
	catalog, err := j.Provider.Machines(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("the provider's catalog: %w", err)
	}
	cataloged := map[string]bool{}
	for _, m := range catalog {
		cataloged[m.Hostname] = true
	}
	var mu sync.Mutex
	err = j.each(ctx, len(gs), func(ctx context.Context, i int) error {
		g := gs[i]
		if _, made := st.Groups[g.record().key()]; !made || !g.t.GceBoot {
			return nil
		}
		mis, err := j.fetchInstances(ctx, g.t.Project, g.m.Zone, g.rev)
		if err != nil {
			if gcecompute.Classify(err) == gcecompute.NotFound {
				return nil
			}
			return fmt.Errorf("instances of %s in %s: %w", g.rev, g.m.Zone, err)
		}
		var names []string
		ids := map[string]string{}
		for _, mi := range mis {
			name := gcecompute.LastSegment(mi.GetInstance())
			id := strconv.FormatUint(mi.GetId(), 10)
			if cataloged[name] || !st.Pending[name].IsZero() || j.wasEnrolled(name, id) {
				continue
			}
			mu.Lock()
			waiting++
			mu.Unlock()
			if mi.GetInstanceStatus() != "RUNNING" || mi.GetCurrentAction() != "NONE" {
				continue
			}
			if ofTemplate(mi, g.record()) != nil {
				continue
			}
			names, ids[name] = append(names, name), id
		}
		if len(names) == 0 {
			return nil
		}
		instances, err := j.instances(ctx, g, names)
		var errs []error
		if err != nil {
			errs = append(errs, err)
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, maxEnrolling)
		for _, name := range names {
			in, ok := instances[name]
			if !ok || strconv.FormatUint(in.GetId(), 10) != ids[name] || !j.ownInstance(in) {
				continue
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				ok, err := j.enroll(ctx, g, in, ca)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				}
				if ok {
					enrolled++
				}
			})
		}
		wg.Wait()
		return errors.Join(errs...)
	})
	return enrolled, max(0, waiting-enrolled), err
}

// maxEnrolling bounds the instances of a group enrolled, or checked for
// their fleet certificate, at once.
const maxEnrolling = 32

// enroll enrolls pool instance in of g: it reports false and no error
// for an instance that does not serve its enrollment yet.
func (j *Jobs) enroll(ctx context.Context, g group, in *computepb.Instance, ca *FleetCA) (bool, error) {
	name, id := in.GetName(), strconv.FormatUint(in.GetId(), 10)
	nics := in.GetNetworkInterfaces()
	if len(nics) == 0 || nics[0].GetNetworkIP() == "" {
		return false, nil
	}
	addr := net.JoinHostPort(nics[0].GetNetworkIP(), strconv.Itoa(PoolPort))
	j.poolAddr(name, addr)
	if servesFleet(ctx, addr, name, id, ca.CertPEM) {
		j.setEnrolled(name, id) // by another replica, or before a restart
		return false, nil
	}
	e := &identity.Enroller{HTTP: identity.EnrollClient()}
	defer e.HTTP.CloseIdleConnections()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := e.Proof(cctx, addr)
	if errors.Is(err, identity.ErrNotServing) {
		j.silent(name, id, g.t.ContainerImage)
		return false, nil // booting
	}
	if err != nil {
		return false, fmt.Errorf("pool instance %s: %w", name, err)
	}
	want := identity.Instance{ProjectID: g.t.Project, Zone: g.m.Zone, ID: id, Name: name}
	csr, err := j.identityVerifier().VerifyProof(cctx, p, want, j.Deployment())
	if err != nil {
		return false, fmt.Errorf("pool instance %s: %w; not certified, so never cataloged", name, err)
	}
	cert, err := ca.Issue(name, id, csr.PublicKey)
	if err != nil {
		return false, err
	}
	if err := e.Deliver(cctx, addr, cert); err != nil {
		return false, fmt.Errorf("pool instance %s: %w", name, err)
	}
	j.setEnrolled(name, id)
	j.Log.Info("enrolled a pool machine: its identity proven, its fleet certificate delivered", "instance", name, "zone", g.m.Zone, "id", id)
	return true, nil
}

// warm returns those of names, instances of gceboot group g, that serve
// with their fleet certificate.
func (j *Jobs) warm(ctx context.Context, g group, names []string, instances map[string]*computepb.Instance) []string {
	caPEM := g.t.fleetCA
	out := make([]bool, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxEnrolling)
	for i, name := range names {
		in, ok := instances[name]
		if !ok || len(in.GetNetworkInterfaces()) == 0 {
			continue
		}
		addr := net.JoinHostPort(in.GetNetworkInterfaces()[0].GetNetworkIP(), strconv.Itoa(PoolPort))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i] = servesFleet(ctx, addr, name, strconv.FormatUint(in.GetId(), 10), caPEM)
		})
	}
	wg.Wait()
	var warm []string
	for i, name := range names {
		if out[i] {
			warm = append(warm, name)
		}
	}
	return warm
}

// silentAfter is how long a running pool instance may not serve its
// enrollment before the backend says so.
const silentAfter = 5 * time.Minute

// silent notes that running pool instance name (id) does not serve its
// enrollment, and warns once when it has not for silentAfter: a machine
// that never answers is never cataloged, and nothing else would say why.
func (j *Jobs) silent(name, id, image string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.silentSince == nil {
		j.silentSince = map[string]time.Time{}
	}
	if len(j.silentSince) > 10*MaxGroupSize {
		clear(j.silentSince)
	}
	k := name + "/" + id
	since, ok := j.silentSince[k]
	switch {
	case !ok:
		j.silentSince[k] = j.Now()
	case !since.IsZero() && j.Now().Sub(since) > silentAfter:
		j.silentSince[k] = time.Time{} // said
		j.Log.Warn("a pool instance has run for minutes without serving its enrollment, so it is not cataloged: is container_image the gceboot image, and does its serial port output say why it stopped?",
			"instance", name, "image", image, "port", PoolPort)
	}
}

func (j *Jobs) identityVerifier() *identity.Verifier {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.verifier == nil {
		j.verifier = identity.NewVerifier(identity.CertsURL(j.cfg.Settings.Endpoint), nil)
	}
	return j.verifier
}

func (j *Jobs) wasEnrolled(name, id string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.enrolled[name] == id
}

func (j *Jobs) setEnrolled(name, id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.enrolled == nil {
		j.enrolled = map[string]string{}
	}
	// Forget those long gone: a name is reused by its group only for a
	// new instance, whose id differs.
	if len(j.enrolled) > 10*MaxGroupSize {
		clear(j.enrolled)
	}
	j.enrolled[name] = id
}
