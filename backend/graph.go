package backend

import (
	"context"
	"time"
)

// schedule registers the jobs; each kicks the ones that wait for it.
func (b *Backend) schedule() *Scheduler {
	j, s := b.jobs, NewScheduler(b.log)
	every := j.Config().Settings.Interval
	// then runs job and, if it changed anything on Compute Engine (or
	// failed), kicks next: a fleet at rest kicks nothing.
	then := func(job func(context.Context) error, next ...string) func(context.Context) error {
		return func(ctx context.Context) error {
			before := j.changes.Load()
			err := job(ctx)
			if err != nil || j.changes.Load() != before {
				for _, n := range next {
					s.Kick(n)
				}
			}
			return err
		}
	}
	s.Add("create-instance-templates", every, then(j.CreateInstanceTemplates, "create-instance-group-managers"))
	s.Add("create-instance-group-managers", every, then(j.CreateInstanceGroupManagers, "enroll-instances", "catalog-instances"))
	s.Add("resize-instance-groups", every, then(j.ResizeInstanceGroups, "enroll-instances", "catalog-instances"))
	// A pool machine is cataloged once enrolled: each enrolment kicks
	// the catalog at once. While machines boot, the job runs again
	// soon, waiting twice as long each time nothing was enrolled, up to
	// the interval.
	retry := time.Second
	s.Add("enroll-instances", every, func(ctx context.Context) error {
		n, waiting, err := j.EnrollInstances(ctx)
		if n > 0 {
			s.Kick("catalog-instances")
			retry = time.Second
		}
		if waiting > 0 && ctx.Err() == nil {
			time.AfterFunc(retry, func() { s.Kick("enroll-instances") })
			retry = min(2*retry, every)
		} else if waiting == 0 {
			retry = time.Second
		}
		return err
	})
	s.Add("catalog-instances", every, func(ctx context.Context) error {
		err := j.CatalogInstances(ctx)
		b.checkConverged()
		return err
	})
	s.Add("delete-instances-pending-deletion", every, then(j.DeleteInstancesPendingDeletion, "catalog-instances", "resize-instance-groups"))
	s.Add("remove-cataloged-instances", every, func(ctx context.Context) error {
		pending := len(j.state().Pending)
		err := j.RemoveCatalogedInstances(ctx)
		if len(j.state().Pending) != pending {
			s.Kick("delete-instances-pending-deletion")
		}
		return err
	})
	s.Add("delete-instance-group-managers", every, then(j.DeleteInstanceGroupManagers, "delete-instance-templates"))
	s.Add("delete-instance-templates", every, j.DeleteInstanceTemplates)
	// The audit lists every instance of its zones: rarely, so that a
	// fleet at rest costs a list per group per interval and little more.
	s.Add("audit-instances", 10*every, j.AuditInstances)
	return s
}
