package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/store"
)

// DeploymentLabel carries, on every instance template and instance the
// backend makes, the identity of the deployment (the provider's database
// and the replicas that serve it) that made it. The backend catalogs,
// resizes, drains and deletes only what carries its own.
const DeploymentLabel = "gcefleet-deployment"

// deploymentKey is where the deployment's identity is kept in the store.
const deploymentKey = "gce-backend/deployment"

// deploymentRE is the form of an identity: it fits a GCE label value and
// a resource name.
var deploymentRE = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)

// newDeploymentID makes a random identity: 48 bits, so that deployments
// sharing a project never draw the same one.
func newDeploymentID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "d-" + hex.EncodeToString(b)
}

// Deployment returns the identity of the deployment whose provider
// database st is, making it at the first call: name (settings.deployment)
// if it is not empty, else a random one. Replicas starting at once all get
// the one stored first. A name other than the stored identity is refused:
// everything the deployment made carries its identity, and under another
// it would be left unmanaged.
func Deployment(ctx context.Context, st *store.Store, name string) (string, error) {
	id := name
	if id == "" {
		id = newDeploymentID()
	}
	stored, err := st.PutIfAbsent(ctx, deploymentKey, id)
	if err != nil {
		return "", err
	}
	if err := sameDeployment(stored, name); err != nil {
		return "", err
	}
	// The database's own identity, made with the deployment's: two
	// databases given the same settings.deployment tell their resources
	// apart by it (see DatabaseLabel).
	if _, err := st.PutIfAbsent(ctx, databaseKey, newDatabaseID()); err != nil {
		return "", err
	}
	return stored, nil
}

// DatabaseLabel carries, on every instance template and instance the
// backend makes, the random identity of the provider database whose
// deployment made it (a group says it in its description). A deployment's
// name is an operator's choice, and two databases may be given the same:
// this tells them apart, so that neither manages the other's machines.
const DatabaseLabel = "gcefleet-database"

// databaseKey is where a database's own identity is kept in the store.
const databaseKey = "gce-backend/database"

// newDatabaseID makes a random database identity that fits a label value.
func newDatabaseID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "db-" + hex.EncodeToString(b)
}

// otherDatabase is the error of a resource of this deployment's name made
// by the deployment of another database.
func (j *Jobs) otherDatabase(what, theirs string) error {
	return notOurs(fmt.Sprintf("%s was made by deployment %q of database %s, and this backend's database is %s: another database uses the deployment name %q; left alone: give each deployment its own settings.deployment (a database keeps the name it first started with: start this deployment again on a new database under another name)",
		what, j.Deployment(), theirs, j.Database(), j.Deployment()))
}

// Database returns the identity of the provider database the jobs work
// for, as LoadState read it: empty if it has none (a database no backend
// of this version has started on, read by plan).
func (j *Jobs) Database() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.database
}

// sameDatabase checks a database identity recorded on a resource: one
// made before databases had identities records none, and stays ours.
func (j *Jobs) sameDatabase(what, recorded string) error {
	if db := j.Database(); recorded != "" && db != "" && recorded != db {
		return j.otherDatabase(what, recorded)
	}
	return nil
}

// StoredDeployment returns the identity kept in st without making one:
// store.ErrNotFound if no backend of this gcefleet has started on it.
func StoredDeployment(ctx context.Context, st *store.Store) (string, error) {
	return st.Get(ctx, deploymentKey)
}

// sameDeployment refuses a configured name other than the stored identity.
func sameDeployment(stored, name string) error {
	if name == "" || name == stored {
		return nil
	}
	return fmt.Errorf("settings.deployment is %q, but this provider database belongs to deployment %q, whose name every template, group and instance it made carries; set settings.deployment: %s (or remove it), or give this deployment a database of its own", name, stored, stored)
}

// errNotOurs is wrapped by the errors of a resource that does not carry
// this deployment's identity: it is left alone.
var errNotOurs = errors.New("not this deployment's")

// legacyDescription and groupDescription are what a group's description
// says; a group has no labels, so its description names its deployment.
func legacyDescription(base string) string { return "gcefleet backend manager of " + base }

func groupDescription(base, deployment, database string) string {
	d := legacyDescription(base) + " in deployment " + deployment
	if database != "" {
		d += " of database " + database
	}
	return d
}

// ownDescription says whether a group's description names deployment and
// no other database than database.
func ownDescription(desc, deployment, database string) bool {
	rest, db := splitDatabase(desc)
	return strings.HasSuffix(rest, " in deployment "+deployment) && (db == "" || database == "" || db == database)
}

// splitDatabase parses a group's description into what it says without
// the database and the database's identity ("" in one made before
// databases had identities).
func splitDatabase(desc string) (rest, database string) {
	if i := strings.LastIndex(desc, " of database "); i >= 0 {
		return desc[:i], desc[i+len(" of database "):]
	}
	return desc, ""
}

// ownTemplate checks that tm is this deployment's: it carries its label,
// or, for a revision recorded before deployments had identities (legacy),
// the backend's label and no deployment's.
func (j *Jobs) ownTemplate(tm *computepb.InstanceTemplate, project string, legacy bool) error {
	labels := tm.GetProperties().GetLabels()
	id := j.Deployment()
	switch {
	case legacy && labels[TemplateLabel] != "" && labels[DeploymentLabel] == "":
		return nil
	case !legacy && labels[DeploymentLabel] == id:
		return j.sameDatabase(fmt.Sprintf("instance template %s in %s", tm.GetName(), project), labels[DatabaseLabel])
	case labels[TemplateLabel] == "":
		return fmt.Errorf("instance template %s in %s exists without the label %s: it is %w; rename the template's base_name or remove that template", tm.GetName(), project, TemplateLabel, errNotOurs)
	}
	return fmt.Errorf("instance template %s in %s carries %s=%q, and this deployment is %q: it is %w, left alone; rename the template's base_name or remove that template", tm.GetName(), project, DeploymentLabel, labels[DeploymentLabel], id, errNotOurs)
}

// ownGroup checks that mig is the group this deployment recorded as g:
// of g's template, and described as this deployment's.
func (j *Jobs) ownGroup(mig *computepb.InstanceGroupManager, g GroupRecord) error {
	want := groupDescription(g.BaseName, j.Deployment(), "")
	if g.Legacy {
		want = legacyDescription(g.BaseName)
	}
	desc, db := splitDatabase(mig.GetDescription())
	if g.Legacy {
		desc, db = mig.GetDescription(), ""
	}
	if tmpl := gcecompute.LastSegment(mig.GetInstanceTemplate()); tmpl != g.Template || desc != want {
		return fmt.Errorf("instance group manager %s in %s uses template %s and says %q; this deployment's uses %s and says %q: it is %w, left alone",
			g.Name, g.Zone, tmpl, mig.GetDescription(), g.Template, groupDescription(g.BaseName, j.Deployment(), j.Database()), errNotOurs)
	}
	return j.sameDatabase(fmt.Sprintf("instance group manager %s in %s", g.Name, g.Zone), db)
}

// ownInstance says whether in carries this deployment's label, and no
// other database's.
func (j *Jobs) ownInstance(in *computepb.Instance) bool {
	return in.GetLabels()[DeploymentLabel] == j.Deployment() && j.sameDatabase("", in.GetLabels()[DatabaseLabel]) == nil
}

// Deployment returns the identity of the deployment the jobs work for.
func (j *Jobs) Deployment() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.deployment
}

// SetDeployment makes the jobs work for the deployment id, as Deployment
// or StoredDeployment returned it; call it before LoadState.
func (j *Jobs) SetDeployment(id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.deployment = id
}

// Revision is the name of t's current revision in this deployment (see
// Template.Revision).
func (j *Jobs) Revision(t Template) (string, error) { return t.Revision(j.Deployment()) }

// ours checks that template name in project is this deployment's (see
// ownTemplate).
func (j *Jobs) ours(ctx context.Context, project, name string, legacy bool) error {
	var tm *computepb.InstanceTemplate
	err := j.retry(ctx, project, func() error {
		var err error
		tm, err = j.Compute.Templates.Get(ctx, &computepb.GetInstanceTemplateRequest{Project: project, InstanceTemplate: name})
		return err
	})
	if err != nil {
		return fmt.Errorf("instance template %s: %w", name, err)
	}
	return j.ownTemplate(tm, project, legacy)
}
