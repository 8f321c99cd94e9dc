package backend

import (
	"context"
	"fmt"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// CreateInstanceTemplates is the create-instance-templates job. It makes
// the GCE template of each configured
// template's current revision, where it does not exist yet, and records
// it. A template of that name that does not carry this deployment's label
// is not ours: it is reported, never adopted.
func (j *Jobs) CreateInstanceTemplates(ctx context.Context) error {
	cfg := j.Config()
	return j.each(ctx, len(cfg.Templates), func(ctx context.Context, i int) error {
		t := cfg.Templates[i]
		res, err := t.resource(j.Deployment(), j.Database())
		if err != nil {
			return err
		}
		rec := TemplateRecord{Project: t.Project, Name: res.GetName(), BaseName: t.BaseName}
		if j.state().Templates[rec.key()].Name != "" {
			return nil // made already
		}
		req := &computepb.InsertInstanceTemplateRequest{Project: t.Project, InstanceTemplateResource: res, RequestId: new(gcecompute.RequestID())}
		err = j.mutate(ctx, t.Project, func() (*computeapi.Operation, error) { return j.Compute.Templates.Insert(ctx, req) })
		switch {
		case err == nil:
			j.changes.Add(1)
			j.Log.Info("created instance template", "template", rec.Name, "project", t.Project)
		case gcecompute.Classify(err) == gcecompute.Exists:
			var tm *computepb.InstanceTemplate
			err := j.retry(ctx, t.Project, func() error {
				var err error
				tm, err = j.Compute.Templates.Get(ctx, &computepb.GetInstanceTemplateRequest{Project: t.Project, InstanceTemplate: rec.Name})
				return err
			})
			if err != nil {
				return fmt.Errorf("instance template %s: %w", rec.Name, err)
			}
			if err := j.ownTemplateOf(tm, t); err != nil {
				return err
			}
		default:
			return fmt.Errorf("instance template %s: %w", rec.Name, err)
		}
		return j.update(ctx, func(s *State) { s.Templates[rec.key()] = rec })
	})
}
