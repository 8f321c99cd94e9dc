package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"
	"golang.org/x/time/rate"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// retry runs a Compute call for project under the project's rate limit,
// retrying transient errors (see gce.Retry).
func (j *Jobs) retry(ctx context.Context, project string, call func() error) error {
	l := j.limiter(project)
	return gcecompute.Retry(gcecompute.WithRetryLog(ctx, j.Log), func() error {
		if err := l.Wait(ctx); err != nil {
			return err
		}
		return call()
	})
}

func (j *Jobs) limiter(project string) *rate.Limiter {
	j.mu.Lock()
	defer j.mu.Unlock()
	l := j.limiters[project]
	if l == nil {
		r := j.cfg.Settings.ComputeRate
		if r <= 0 {
			r = 20
		}
		l = rate.NewLimiter(rate.Limit(r), max(1, int(r)))
		j.limiters[project] = l
	}
	return l
}

// mutate makes a Compute change under the project's rate limit and waits
// for its operation, retrying transient errors under the same request id
// (the request carries it).
func (j *Jobs) mutate(ctx context.Context, project string, call func() (*computeapi.Operation, error)) error {
	return j.retry(ctx, project, func() error {
		op, err := call()
		if err != nil {
			return err
		}
		return j.Compute.Wait(ctx, project, op)
	})
}

// each runs f for 0..n-1, at most Concurrency at once, and joins their
// errors.
func (j *Jobs) each(ctx context.Context, n int, f func(context.Context, int) error) error {
	sem := make(chan struct{}, max(1, j.Concurrency))
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = f(ctx, i)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// group is a configured manager's group of its template's current
// revision.
type group struct {
	m          Manager
	t          Template
	rev        string
	deployment string
	// w is the manager's window in force when the groups were read: its
	// minimum_size and min_idle.
	w Window
}

func (g group) record() GroupRecord {
	return GroupRecord{Project: g.t.Project, Zone: g.m.Zone, Name: g.rev, Template: g.rev, BaseName: g.t.BaseName}
}

// groups returns the configured groups. It fails if a template's revision
// cannot be computed: which groups are current, and so which drain, is
// then unknown.
func (j *Jobs) groups() ([]group, error) {
	cfg := j.Config()
	id := j.Deployment()
	templates := map[string]Template{}
	revs := map[string]string{}
	var errs []error
	for _, t := range cfg.Templates {
		rev, err := t.Revision(id)
		templates[t.BaseName], revs[t.BaseName] = t, rev
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var out []group
	now := j.now()
	for _, m := range cfg.Managers {
		t := templates[m.TemplateBaseName]
		out = append(out, group{m: m, t: t, rev: revs[m.TemplateBaseName], deployment: id, w: m.InForce(now)})
	}
	return out, nil
}

// configured says whether g is still one of the configured groups.
func (j *Jobs) configured(g group) (bool, error) {
	gs, err := j.groups()
	if err != nil {
		return false, err
	}
	for _, c := range gs {
		if c.record().key() == g.record().key() {
			return true, nil
		}
	}
	return false, nil
}

// currentTemplates returns the keys of the configured revisions.
func (j *Jobs) currentTemplates() (map[string]bool, error) {
	out := map[string]bool{}
	id := j.Deployment()
	for _, t := range j.Config().Templates {
		rev, err := t.Revision(id)
		if err != nil {
			return nil, err
		}
		out[t.Project+"/"+rev] = true
	}
	return out, nil
}

// drained returns the groups the backend made that the configuration no
// longer names: an old revision's, or a removed manager's. It fails as
// groups does: a group is never taken for drained because its revision is
// unknown.
func (j *Jobs) drained() ([]GroupRecord, error) {
	gs, err := j.groups()
	if err != nil {
		return nil, err
	}
	current := map[string]bool{}
	for _, g := range gs {
		current[g.record().key()] = true
	}
	var out []GroupRecord
	for k, g := range j.state().Groups {
		if !current[k] {
			out = append(out, g)
		}
	}
	return out, nil
}

func (j *Jobs) now() time.Time {
	if j.Now == nil {
		return time.Now()
	}
	return j.Now()
}

// baseInstanceName names a group's instances: its revision and a code of
// its zone. Instance names are unique only within a zone in GCE, but they
// are the catalog's hostnames, which are unique across the fleet; groups
// of one revision in several zones would otherwise draw the same names.
func baseInstanceName(rev, zone string) string {
	sum := sha256.Sum256([]byte(zone))
	return rev + "-" + hex.EncodeToString(sum[:2])
}

func (j *Jobs) getGroup(ctx context.Context, project, zone, name string) (*computepb.InstanceGroupManager, error) {
	var mig *computepb.InstanceGroupManager
	err := j.retry(ctx, project, func() error {
		var err error
		mig, err = j.Compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: project, Zone: zone, InstanceGroupManager: name})
		return err
	})
	return mig, err
}

// othersSize is the target size of the backend's other groups of g's
// template in g's zone: the drained revisions g replaces.
func (j *Jobs) othersSize(ctx context.Context, g group, drained []GroupRecord) (int, error) {
	n := 0
	for _, d := range drained {
		if d.Project != g.t.Project || d.Zone != g.m.Zone || d.BaseName != g.t.BaseName {
			continue
		}
		mig, err := j.getGroup(ctx, d.Project, d.Zone, d.Name)
		if gcecompute.Classify(err) == gcecompute.NotFound {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("group %s in %s: %w", d.Name, d.Zone, err)
		}
		n += int(mig.GetTargetSize())
	}
	return n, nil
}

// ofTemplate checks, before an instance of g is deleted, that g made it
// from g's template, which carries the deployment's label: a group's
// instance lists say which template each instance was made from.
func ofTemplate(mi *computepb.ManagedInstance, g GroupRecord) error {
	if t := gcecompute.LastSegment(mi.GetVersion().GetInstanceTemplate()); t != g.Template {
		return fmt.Errorf("instance %s of group %s in %s was made from template %q, not the group's %s: %w, left alone",
			gcecompute.LastSegment(mi.GetInstance()), g.Name, g.Zone, t, g.Template, errNotOurs)
	}
	return nil
}

// forgetPendingOfNoGroup forgets the instances pending deletion that no
// group of the backend's holds any more: their group is gone, and they
// with it.
func forgetPendingOfNoGroup(s *State) {
	for host := range s.Pending {
		if !ofAnyGroup(s, host) {
			delete(s.Pending, host)
		}
	}
}

// ofAnyGroup says whether host is named as an instance of one of the
// backend's groups.
func ofAnyGroup(st *State, host string) bool {
	for _, g := range st.Groups {
		if strings.HasPrefix(host, g.prefix()) {
			return true
		}
	}
	return false
}
