package backend

import (
	"context"
	"fmt"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// DeleteInstanceTemplates is the delete-instance-templates job. It
// deletes the templates of revisions the
// configuration no longer uses, once no group of the backend's uses them.
func (j *Jobs) DeleteInstanceTemplates(ctx context.Context) error {
	st := j.state()
	current, err := j.currentTemplates()
	if err != nil {
		return err
	}
	inUse := map[string]bool{}
	for _, g := range st.Groups {
		inUse[g.Project+"/"+g.Template] = true
	}
	var drained []TemplateRecord
	for k, t := range st.Templates {
		if !current[k] && !inUse[k] {
			drained = append(drained, t)
		}
	}
	return j.each(ctx, len(drained), func(ctx context.Context, i int) error {
		t := drained[i]
		err := j.ours(ctx, t.Project, t.Name, t.Legacy)
		if gcecompute.Classify(err) == gcecompute.NotFound {
			return j.update(ctx, func(s *State) { delete(s.Templates, t.key()) })
		}
		if err != nil {
			return err
		}
		req := &computepb.DeleteInstanceTemplateRequest{Project: t.Project, InstanceTemplate: t.Name, RequestId: new(gcecompute.RequestID())}
		err = j.mutate(ctx, t.Project, func() (*computeapi.Operation, error) { return j.Compute.Templates.Delete(ctx, req) })
		if err != nil && gcecompute.Classify(err) != gcecompute.NotFound {
			return fmt.Errorf("deleting drained template %s: %w", t.Name, err)
		}
		j.Log.Info("deleted drained instance template", "template", t.Name, "project", t.Project)
		return j.update(ctx, func(s *State) { delete(s.Templates, t.key()) })
	})
}
