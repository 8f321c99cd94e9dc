package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/gcefleet/gcefleet/store"
)

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
// The database's identity (see DatabaseLabel) is read too, if Deployment
// made it.
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
	db, err := st.Get(ctx, databaseKey)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.st = s
	j.database = db
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
