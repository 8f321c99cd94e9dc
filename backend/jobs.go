package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"
	"golang.org/x/time/rate"

	gceapi "github.com/gcefleet/gcefleet/gce"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// Jobs are the backend's reconcile steps, each idempotent: run again, it
// makes no change once GCE matches the configuration. They share the
// configuration in force and the backend's State.
type Jobs struct {
	Compute  *gceapi.Client
	Provider *client.Client // nil: jobs that need the catalog fail
	Log      *slog.Logger

	// Concurrency bounds how many managers a job works on at once.
	Concurrency int
	// Now is the clock.
	Now func() time.Time

	mu         sync.Mutex
	cfg        Config
	deployment string // the identity everything it makes carries
	st         State
	save       func(context.Context, State) error
	limiters   map[string]*rate.Limiter
	stats      map[string]GroupStats // by group key, from the last passes
	changes    atomic.Int64          // Compute changes made, so that jobs kick others only then

	machineTypes map[string]*computepb.MachineType // by zone/name
}

// GroupStats is what the last passes saw of a group.
type GroupStats struct {
	Target  int // the group's target size
	Current int // instances in the group
	Leased  int // of them, leased in the catalog
	Idle    int // cataloged and available
	// Failing is why the group cannot create instances (a stockout or
	// quota, from its instances' last attempts), if it cannot; while it
	// is set the group is not grown.
	Failing string
}

// Stats returns the last seen state of each group the backend made, by
// project/zone/name.
func (j *Jobs) Stats() map[string]GroupStats {
	j.mu.Lock()
	defer j.mu.Unlock()
	return maps.Clone(j.stats)
}

func (j *Jobs) setStats(key string, change func(*GroupStats)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.stats == nil {
		j.stats = map[string]GroupStats{}
	}
	gs := j.stats[key]
	change(&gs)
	j.stats[key] = gs
}

// NewJobs returns jobs for cfg with an empty state kept in memory, for
// the deployment settings.deployment names or, if it names none, for a
// deployment of their own (a random identity): SetDeployment sets the one
// a store keeps.
func NewJobs(compute *gceapi.Client, prov *client.Client, cfg Config, log *slog.Logger) *Jobs {
	id := cfg.Settings.Deployment
	if id == "" {
		id = newDeploymentID()
	}
	return &Jobs{Compute: compute, Provider: prov, Log: log, Concurrency: 8, Now: time.Now, cfg: cfg, deployment: id, st: newState(), limiters: map[string]*rate.Limiter{}}
}

// Config returns the configuration in force.
func (j *Jobs) Config() Config {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.cfg
}

// SetConfig puts cfg in force; the next run of each job works to it.
func (j *Jobs) SetConfig(cfg Config) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.cfg = cfg
	for _, l := range j.limiters {
		l.SetLimit(rate.Limit(cfg.Settings.ComputeRate))
	}
}

// State is what the backend remembers: what it made on Compute Engine
// (so that it drains and deletes only its own, and knows them after the
// configuration stops naming them), the instances it must delete, and
// how far it read the provider's events. It lives in the provider's
// store, so a restarted or newly elected backend goes on where the last
// one stopped.
type State struct {
	// Deployment is the identity of the deployment the state is of; a
	// state without one is from before deployments had identities, and
	// what it records is legacy (see LoadState).
	Deployment string                    `json:"deployment,omitempty"`
	Cursor     int64                     `json:"cursor"`
	Templates  map[string]TemplateRecord `json:"templates"` // by project/name
	Groups     map[string]GroupRecord    `json:"groups"`    // by project/zone/name
	// Pending are instances to delete (their lease was reclaimed, or
	// their group is drained), by name, with when they were found.
	Pending map[string]time.Time `json:"pending"`
	// Leftovers are instances labelled as the backend's that no group of
	// its explains, by project/zone/name, with when the audit first saw
	// them.
	Leftovers map[string]time.Time `json:"leftovers,omitempty"`
}

func newState() State {
	return State{Templates: map[string]TemplateRecord{}, Groups: map[string]GroupRecord{}, Pending: map[string]time.Time{}, Leftovers: map[string]time.Time{}}
}

// TemplateRecord is an instance template the backend made.
type TemplateRecord struct {
	Project  string `json:"project"`
	Name     string `json:"name"` // the revision
	BaseName string `json:"base_name"`
	// Legacy marks a template made before deployments had identities: it
	// carries the backend's label but no deployment's, and is known as
	// this deployment's because its state recorded it.
	Legacy bool `json:"legacy,omitempty"`
}

func (t TemplateRecord) key() string { return t.Project + "/" + t.Name }

// GroupRecord is a managed instance group the backend made.
type GroupRecord struct {
	Project  string `json:"project"`
	Zone     string `json:"zone"`
	Name     string `json:"name"`     // the revision
	Template string `json:"template"` // the revision's template: Name
	BaseName string `json:"base_name"`
	// Legacy marks a group made before deployments had identities (see
	// TemplateRecord.Legacy): its description names no deployment.
	Legacy bool `json:"legacy,omitempty"`
}

func (g GroupRecord) key() string { return g.Project + "/" + g.Zone + "/" + g.Name }

// prefix begins the name of each of the group's instances.
func (g GroupRecord) prefix() string { return baseInstanceName(g.Name, g.Zone) + "-" }

// stateKey is where State is kept in the store.
const stateKey = "gce-backend/state"

// LoadState reads the backend's state from st (empty if there is none
// yet) and keeps every change there, fenced by f.
//
// A state saved before deployments had identities keeps what it recorded:
// its templates and groups become legacy, still this deployment's by name
// and the backend's label, and drain as old revisions do, since the
// configuration's revisions have new names now. The state is then this
// deployment's (SetDeployment names it); another deployment's is refused.
func (j *Jobs) LoadState(ctx context.Context, st *store.Store, f store.Fence) error {
	id := j.Deployment()
	s := newState()
	v, err := st.Get(ctx, stateKey)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	default:
		if err := json.Unmarshal([]byte(v), &s); err != nil {
			return fmt.Errorf("backend state in the store: %w", err)
		}
		s.Templates, s.Groups, s.Pending, s.Leftovers = nonNil(s.Templates), nonNil(s.Groups), nonNil(s.Pending), nonNil(s.Leftovers)
	}
	switch s.Deployment {
	case id:
	case "":
		for k, t := range s.Templates {
			t.Legacy = true
			s.Templates[k] = t
		}
		for k, g := range s.Groups {
			g.Legacy = true
			s.Groups[k] = g
		}
		if len(s.Groups)+len(s.Templates) > 0 {
			j.Log.Info("the backend's state is from before deployments had identities: what it made drains as old revisions do, and the configuration's revisions are made with this deployment's names", "deployment", id,
				"templates", len(s.Templates), "groups", len(s.Groups))
		}
		s.Deployment = id
	default:
		return fmt.Errorf("backend state in the store is deployment %q's, not %q's", s.Deployment, id)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.st = s
	j.save = func(ctx context.Context, s State) error {
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		return st.Put(ctx, stateKey, string(b), f)
	}
	return nil
}

func nonNil[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return map[K]V{}
	}
	return m
}

// State returns a copy of the backend's state.
func (j *Jobs) State() State { return j.state() }

// state returns a copy of the state.
func (j *Jobs) state() State {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.st.clone()
}

func (s State) clone() State {
	return State{Deployment: s.Deployment, Cursor: s.Cursor, Templates: maps.Clone(s.Templates), Groups: maps.Clone(s.Groups), Pending: maps.Clone(s.Pending), Leftovers: maps.Clone(s.Leftovers)}
}

// update changes the state and keeps it. A change that cannot be kept is
// undone, so that memory never runs ahead of the store.
func (j *Jobs) update(ctx context.Context, change func(*State)) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	old := j.st.clone()
	change(&j.st)
	if j.save == nil {
		return nil
	}
	if err := j.save(ctx, j.st); err != nil {
		j.st = old
		return fmt.Errorf("keeping the backend's state: %w", err)
	}
	return nil
}

// retry runs a Compute call for project under the project's rate limit,
// retrying transient errors (see gce.Retry).
func (j *Jobs) retry(ctx context.Context, project string, call func() error) error {
	l := j.limiter(project)
	return gceapi.Retry(gceapi.WithRetryLog(ctx, j.Log), func() error {
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
}

func (g group) record() GroupRecord {
	return GroupRecord{Project: g.t.Project, Zone: g.m.Zone, Name: g.rev, Template: g.rev, BaseName: g.t.BaseName}
}

// groups returns the configured groups.
func (j *Jobs) groups() []group {
	cfg := j.Config()
	templates := map[string]Template{}
	for _, t := range cfg.Templates {
		templates[t.BaseName] = t
	}
	id := j.Deployment()
	var out []group
	for _, m := range cfg.Managers {
		t := templates[m.TemplateBaseName]
		out = append(out, group{m: m, t: t, rev: t.Revision(id), deployment: id})
	}
	return out
}

// configured says whether g is still one of the configured groups.
func (j *Jobs) configured(g group) bool {
	for _, c := range j.groups() {
		if c.record().key() == g.record().key() {
			return true
		}
	}
	return false
}

// currentTemplates returns the keys of the configured revisions.
func (j *Jobs) currentTemplates() map[string]bool {
	out := map[string]bool{}
	id := j.Deployment()
	for _, t := range j.Config().Templates {
		out[t.Project+"/"+t.Revision(id)] = true
	}
	return out
}

// drained returns the groups the backend made that the configuration no
// longer names: an old revision's, or a removed manager's.
func (j *Jobs) drained() []GroupRecord {
	current := map[string]bool{}
	for _, g := range j.groups() {
		current[g.record().key()] = true
	}
	var out []GroupRecord
	for k, g := range j.state().Groups {
		if !current[k] {
			out = append(out, g)
		}
	}
	return out
}

func (j *Jobs) now() time.Time {
	if j.Now == nil {
		return time.Now()
	}
	return j.Now()
}
