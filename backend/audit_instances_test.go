package backend_test

import (
	"context"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/gcecompute"
)

// TestAuditDeletesOnlyLabelledLeftovers: an instance labelled as this
// deployment's that no group explains is deleted after the grace; one
// without the label is never touched, nor a group's own: not a person's
// that carries the backend's template label (as one copied from a
// template would), nor another deployment's.
func TestAuditDeletesOnlyLabelledLeftovers(t *testing.T) {
	j, _ := jobs(t, poolTemplate+`managers:
  - {template_base_name: pool, zone: us-central1-a, minimum_size: 1, maximum_size: 2}
settings:
  audit_grace: 10m
`)
	ctx := context.Background()
	now := time.Now()
	j.Now = func() time.Time { return now }
	if err := j.CreateInstanceTemplates(ctx); err != nil {
		t.Fatal(err)
	}
	if err := j.CreateInstanceGroupManagers(ctx); err != nil {
		t.Fatal(err)
	}
	create := func(name string, labels map[string]string) {
		t.Helper()
		op, err := j.Compute.Instances.Insert(ctx, &computepb.InsertInstanceRequest{Project: "my-project", Zone: "us-central1-a",
			InstanceResource: &computepb.Instance{Name: new(name), MachineType: new("zones/us-central1-a/machineTypes/e2-small"), Labels: labels,
				Disks: []*computepb.AttachedDisk{{Boot: new(true), AutoDelete: new(true), InitializeParams: &computepb.AttachedDiskInitializeParams{
					SourceImage: new("projects/debian-cloud/global/images/family/debian-12")}}},
				NetworkInterfaces: []*computepb.NetworkInterface{{}}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := op.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	create("leaked", map[string]string{backend.TemplateLabel: "pool", backend.DeploymentLabel: j.Deployment()})
	create("someone-elses", map[string]string{"team": "web"})
	create("a-persons", map[string]string{backend.TemplateLabel: "pool"})
	create("another-deployments", map[string]string{backend.TemplateLabel: "pool", backend.DeploymentLabel: "d-other"})
	exists := func(name string) bool {
		_, err := j.Compute.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: "my-project", Zone: "us-central1-a", Instance: name})
		return err == nil
	}
	if err := j.AuditInstances(ctx); err != nil {
		t.Fatal(err)
	}
	if !exists("leaked") || len(j.State().Leftovers) != 1 {
		t.Fatalf("first sight: leaked exists %v, leftovers %v; want it kept for the grace and recorded", exists("leaked"), j.State().Leftovers)
	}
	now = now.Add(11 * time.Minute)
	if err := j.AuditInstances(ctx); err != nil {
		t.Fatal(err)
	}
	if exists("leaked") {
		t.Error("a labelled leftover outlived its grace")
	}
	for _, name := range []string{"someone-elses", "a-persons", "another-deployments"} {
		if !exists(name) {
			t.Errorf("the audit deleted %s, an instance without this deployment's label", name)
		}
	}
	mis, err := j.Compute.Groups.ListManagedInstances(ctx, &computepb.ListManagedInstancesInstanceGroupManagersRequest{Project: "my-project", Zone: "us-central1-a",
		InstanceGroupManager: revision(t, j, j.Config().Templates[0])}).Next()
	if err != nil || !exists(gcecompute.LastSegment(mis.GetInstance())) {
		t.Errorf("the group's own instance: %v, %v", mis, err)
	}
	if err := j.AuditInstances(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(j.State().Leftovers); n != 0 {
		t.Errorf("%d leftovers remembered after deletion", n)
	}
}
