// Package backend is the GCE Backend of the Machine Provider: declared
// instance templates and managed instance groups that reconcile jobs make
// Compute Engine match, cataloging the instances in the provider and
// deleting those whose lease was reclaimed.
//
// # Why jobs
//
// The backend is a set of small jobs rather than one loop that walks the
// fleet. Each job does one kind of change, reads what it needs afresh
// (from Compute Engine, the provider's catalog and the backend's State)
// and records what it did, so that any job can fail, be stopped by a lost
// leadership or a crash at any point, and simply run again: the next run,
// here or on the replica that leads next, takes up where Compute Engine
// and the State say things are. No job hands data to another; a job only
// kicks another to run sooner than its interval would.
//
// Each job is a method of [Jobs] named for the job, in a file named for
// it: create-instance-templates is [Jobs.CreateInstanceTemplates] in
// create_instance_templates.go, and so on. What several jobs share is in
// helpers.go (rate-limited calls, the configured groups, the drained
// ones), state.go (the State and how it is kept) and identity.go (the
// ownership checks). The lifecycle of a replica is in lifecycle.go, its
// leader election in leader.go, the configuration's reload in reload.go,
// the job graph in graph.go, the metrics in collector.go and the status
// page in status.go.
//
// # Invariants
//
// Every job is idempotent: run twice, the second run changes nothing once
// Compute Engine matches the configuration. A change is recorded in the
// State only after Compute Engine made it, and a resource found existing
// under the name a job would give it is checked to be this deployment's
// before it is recorded, so a crash between the two is healed by the next
// run. The scheduler never runs one job twice at once.
//
// Only resources carrying this deployment's identity are touched: an
// instance template or instance must carry [DeploymentLabel] with the
// deployment's identity, a group must use such a template and say the
// deployment's name in its description (a group has no labels), and an
// instance is deleted through its group, after the group's list shows it
// made from that template, or by the audit, which lists only instances
// with the label and deletes one only when no group of the deployment's
// has explained it for the configured grace. A resource of the right name
// without the identity is reported and left alone, never adopted,
// resized, drained or deleted. What a state from before deployments had
// identities recorded is the one exception: it carries the backend's
// labels but no deployment's, and is known as this deployment's because
// its state names it (see [Jobs.LoadState]).
//
// Labels can be copied by anyone who may create templates in the
// project, so a template found under the name of one the backend would
// make is adopted only if its properties are what the backend would make
// (template_diff.go), and a group's instances are cataloged only if the
// group made them from that template. Two databases given one
// settings.deployment tell their resources apart by the database's own
// random id ([DatabaseLabel]); what another database made is refused, and
// what was made before databases had ids (no database label or mention in
// the description) stays this deployment's.
//
// A group is never shrunk by a resize, which would let Compute Engine
// pick the instances to delete, leased ones among them: instances leave a
// group only through deleteInstances, once they were reclaimed from their
// lease or taken idle out of the catalog (a drained group's, or one idle
// past idle_timeout beyond what its group needs). Templates are immutable, so a
// changed template is a new revision ([Template.Revision]); the old
// revision's groups drain (idle instances now, leased ones when their
// lease ends), then the groups are deleted, then the template. A revision
// that cannot be computed (a metadata file that cannot be read) is an
// error of every job that needs the configured revisions, never a new
// revision: nothing is rolled out or drained until it can be.
//
// Only the leader among replicas runs the jobs, and the State in the
// provider's store is written fenced by its leadership, so a replica that
// lost it cannot overwrite its successor's.
//
// # Jobs and the kick graph
//
// Every job runs on the configured interval (the audit on ten times it)
// and at once when kicked. A job kicks the ones that wait for its work
// only when it changed something on Compute Engine or failed, so that a
// fleet at rest kicks nothing:
//
//	create-instance-templates          -> create-instance-group-managers
//	create-instance-group-managers     -> enroll-instances, catalog-instances, resize-instance-groups (requests may wait for the new groups)
//	resize-instance-groups             -> enroll-instances, catalog-instances
//	enroll-instances                   -> catalog-instances (when it enrolled any);
//	                                      itself while machines boot (after 1s, 2s, ... up to the interval)
//	delete-instances-pending-deletion  -> catalog-instances, resize-instance-groups
//	remove-cataloged-instances         -> delete-instances-pending-deletion (when it recorded any)
//	delete-idle-instances              -> delete-instances-pending-deletion (when it recorded any)
//	delete-instance-group-managers     -> delete-instance-templates
//	catalog-instances, delete-instance-templates, audit-instances: kick none
//
// While waiting requests are assigned to a group whose instances still
// boot, catalog-instances runs again every two seconds, so that each is
// leased the moment it runs.
//
// Outside the scheduler: the demand follower long-polls the provider's
// demand (GET /v1/demand) and kicks resize-instance-groups each time it
// changes, which assigns each waiting request to one group (see assign)
// and publishes the groups' offers (PUT /v1/offers); the event follower
// runs update-cataloged-instances
// on each batch of the provider's events and kicks
// delete-instances-pending-deletion when a reclaimed instance was
// recorded, and resize-instance-groups when a machine was leased while a
// manager keeps a min_idle spare (so the group regrows it at once); a
// manager's schedule window
// changing kicks resize-instance-groups and delete-idle-instances; a
// reload of the configuration (import-config, then process-config) kicks
// every job.
//
// # Idle capacity
//
// A group needs [Keep]: its window's minimum, or a tenth above its leased
// machines plus the requests waiting for it plus its window's min_idle,
// whichever is more (schedule.go says which window is in force, by the
// jobs' clock). resize-instance-groups grows it to that; with
// idle_timeout, delete-idle-instances takes machines idle that long
// beyond it out of the catalog (the provider removes a machine only
// while it is AVAILABLE) and records them for deletion by name. It and
// catalog-instances hold one lock, so that a machine taken out of the
// catalog is recorded before catalog-instances could catalog it again. Two steps run inside jobs rather than
// on their own: fetch-instances, the list of a group's instances each job
// that works on them begins with, and cleanup-entities, which ends each
// complete audit pass by forgetting the leftovers and pending deletions
// that are gone.
//
// # Pool machines
//
// A template with gceboot: true makes warm pool machines for bigmachine's
// pool system. Its instances' metadata (set by the backend, part of the
// revision) holds only public things: the provider's claim key, the
// deployment's fleet CA certificate and the deployment id its identity token binds ([Jobs.LoadPool]; the fleet CA,
// key and certificate, is kept in the deployment's database and shared by
// replicas, fleet_ca.go). enroll-instances has each new instance prove
// which instance it is and certifies the key it made with the fleet CA;
// catalog-instances catalogs it only once it serves TLS with that
// certificate, with dimension gceboot=true, its cpus, and a Connection of
// its address, port and the fleet CA. A pool machine serves one lease: its
// policy is DELETE, so when the lease ends it is reclaimed and deleted like
// any other, and its group makes a fresh one.
package backend
