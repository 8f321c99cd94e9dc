package emulator_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/emulator"
)

// ccl holds Cloud Client Library clients on one emulator.
type ccl struct {
	instances *computeapi.InstancesClient
	templates *computeapi.InstanceTemplatesClient
	groups    *computeapi.InstanceGroupManagersClient
	firewalls *computeapi.FirewallsClient
	globalOps *computeapi.GlobalOperationsClient
	regionOps *computeapi.RegionOperationsClient
	zones     *computeapi.ZonesClient
	regions   *computeapi.RegionsClient
	types     *computeapi.MachineTypesClient
	images    *computeapi.ImagesClient
}

func newCCL(t *testing.T, e *env) *ccl {
	t.Helper()
	ctx := context.Background()
	opts := []option.ClientOption{option.WithEndpoint(e.url), option.WithoutAuthentication()}
	var c ccl
	var errs []error
	add := func(closer interface{ Close() error }, err error) {
		errs = append(errs, err)
		if err == nil {
			t.Cleanup(func() { closer.Close() })
		}
	}
	var err error
	c.instances, err = computeapi.NewInstancesRESTClient(ctx, opts...)
	add(c.instances, err)
	c.templates, err = computeapi.NewInstanceTemplatesRESTClient(ctx, opts...)
	add(c.templates, err)
	c.groups, err = computeapi.NewInstanceGroupManagersRESTClient(ctx, opts...)
	add(c.groups, err)
	c.firewalls, err = computeapi.NewFirewallsRESTClient(ctx, opts...)
	add(c.firewalls, err)
	c.globalOps, err = computeapi.NewGlobalOperationsRESTClient(ctx, opts...)
	add(c.globalOps, err)
	c.regionOps, err = computeapi.NewRegionOperationsRESTClient(ctx, opts...)
	add(c.regionOps, err)
	c.zones, err = computeapi.NewZonesRESTClient(ctx, opts...)
	add(c.zones, err)
	c.regions, err = computeapi.NewRegionsRESTClient(ctx, opts...)
	add(c.regions, err)
	c.types, err = computeapi.NewMachineTypesRESTClient(ctx, opts...)
	add(c.types, err)
	c.images, err = computeapi.NewImagesRESTClient(ctx, opts...)
	add(c.images, err)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return &c
}

// done fails the test unless the call and its operation both succeed.
func done(t *testing.T, op *computeapi.Operation, err error) {
	t.Helper()
	if err == nil {
		err = op.Wait(context.Background())
	}
	if err != nil {
		t.Fatal(err)
	}
}

// all drains a Cloud Client Library iterator.
func all[T any](t *testing.T, next func() (T, error)) []T {
	t.Helper()
	var out []T
	for {
		v, err := next()
		if errors.Is(err, iterator.Done) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
}

func TestCloudClientLibraryCatalog(t *testing.T) {
	e := start(t, emulator.Options{})
	c := newCCL(t, e)
	ctx := context.Background()

	z, err := c.zones.Get(ctx, &computepb.GetZoneRequest{Project: proj, Zone: "europe-west1-d"})
	if err != nil || !strings.HasSuffix(z.GetRegion(), "/regions/europe-west1") || z.GetStatus() != "UP" {
		t.Errorf("zones.get: %v, %v", z, err)
	}
	if zs := all(t, c.zones.List(ctx, &computepb.ListZonesRequest{Project: proj}).Next); len(zs) < 13 {
		t.Errorf("zones.list: %d zones, want at least 13", len(zs))
	}
	r, err := c.regions.Get(ctx, &computepb.GetRegionRequest{Project: proj, Region: "us-central1"})
	if err != nil {
		t.Fatal(err)
	}
	quotas := map[string]float64{}
	for _, q := range r.GetQuotas() {
		quotas[q.GetMetric()] = q.GetLimit()
	}
	for _, m := range []string{"CPUS", "INSTANCES", "IN_USE_ADDRESSES"} {
		if quotas[m] <= 0 {
			t.Errorf("region has no %s quota: %v", m, quotas)
		}
	}
	if rs := all(t, c.regions.List(ctx, &computepb.ListRegionsRequest{Project: proj}).Next); len(rs) < 4 {
		t.Errorf("regions.list: %d regions", len(rs))
	}
	mt, err := c.types.Get(ctx, &computepb.GetMachineTypeRequest{Project: proj, Zone: zone, MachineType: "n2-standard-8"})
	if err != nil || mt.GetGuestCpus() != 8 || mt.GetMemoryMb() != 32768 {
		t.Errorf("machineTypes.get: %v, %v", mt, err)
	}
	e2 := all(t, c.types.List(ctx, &computepb.ListMachineTypesRequest{Project: proj, Zone: zone, Filter: new(`name eq "e2-.*"`)}).Next)
	if len(e2) < 5 {
		t.Errorf("machineTypes.list with a regex filter: %d e2 types", len(e2))
	}
	img, err := c.images.GetFromFamily(ctx, &computepb.GetFromFamilyImageRequest{Project: "cos-cloud", Family: "cos-stable"})
	if err != nil || img.GetFamily() != "cos-stable" || img.GetStatus() != "READY" {
		t.Errorf("images.getFromFamily: %v, %v", img, err)
	}
}

// TestCloudClientLibraryInstances runs an instance through its whole life
// with the Cloud Client Library: bulk insert, labels and metadata with their
// fingerprints, stop and start, the serial port, delete.
func TestCloudClientLibraryInstances(t *testing.T) {
	e := start(t, workloadOptions(t))
	c := newCCL(t, e)
	ctx := context.Background()

	decl := "spec:\n  containers:\n  - name: w\n    image: " + workloadImage + "\n    env:\n    - name: EMULATOR_TEST_WORKLOAD\n      value: \"1\"\n  restartPolicy: Never\n"
	op, err := c.instances.BulkInsert(ctx, &computepb.BulkInsertInstanceRequest{Project: proj, Zone: zone,
		BulkInsertInstanceResourceResource: &computepb.BulkInsertInstanceResource{
			Count: new(int64(2)), MinCount: new(int64(2)), NamePattern: new("ccl-bulk-##"),
			InstanceProperties: &computepb.InstanceProperties{
				MachineType: new("e2-small"),
				Labels:      map[string]string{"run": "r1"},
				Disks: []*computepb.AttachedDisk{{Boot: new(true), InitializeParams: &computepb.AttachedDiskInitializeParams{
					SourceImage: new("projects/cos-cloud/global/images/family/cos-stable")}}},
				NetworkInterfaces: []*computepb.NetworkInterface{{}},
				Metadata:          &computepb.Metadata{Items: []*computepb.Items{{Key: new("gce-container-declaration"), Value: &decl}}},
			},
		}})
	done(t, op, err)
	list := all(t, c.instances.List(ctx, &computepb.ListInstancesRequest{Project: proj, Zone: zone, Filter: new("labels.run = r1")}).Next)
	if len(list) != 2 || list[0].GetName() != "ccl-bulk-01" || list[1].GetName() != "ccl-bulk-02" {
		t.Fatalf("bulkInsert made %v", names(list))
	}

	const name = "ccl-bulk-01"
	waitFor(t, "the container to write to the serial port", func() bool {
		out, err := c.instances.GetSerialPortOutput(ctx, &computepb.GetSerialPortOutputInstanceRequest{Project: proj, Zone: zone, Instance: name})
		return err == nil && strings.Contains(out.GetContents(), "workload "+name+" listening")
	})

	got, err := c.instances.Get(ctx, &computepb.GetInstanceRequest{Project: proj, Zone: zone, Instance: name})
	if err != nil {
		t.Fatal(err)
	}
	op, err = c.instances.SetLabels(ctx, &computepb.SetLabelsInstanceRequest{Project: proj, Zone: zone, Instance: name,
		InstancesSetLabelsRequestResource: &computepb.InstancesSetLabelsRequest{
			Labels: map[string]string{"run": "r1", "stage": "two"}, LabelFingerprint: got.LabelFingerprint}})
	done(t, op, err)
	// The old fingerprint is stale now.
	_, err = c.instances.SetLabels(ctx, &computepb.SetLabelsInstanceRequest{Project: proj, Zone: zone, Instance: name,
		InstancesSetLabelsRequestResource: &computepb.InstancesSetLabelsRequest{Labels: map[string]string{}, LabelFingerprint: got.LabelFingerprint}})
	var ge *googleapi.Error
	if !errors.As(err, &ge) || ge.Code != 412 {
		t.Errorf("setLabels with a stale fingerprint: %v, want 412", err)
	}
	items := append(got.GetMetadata().GetItems(), &computepb.Items{Key: new("extra"), Value: new("yes")})
	op, err = c.instances.SetMetadata(ctx, &computepb.SetMetadataInstanceRequest{Project: proj, Zone: zone, Instance: name,
		MetadataResource: &computepb.Metadata{Items: items, Fingerprint: got.GetMetadata().Fingerprint}})
	done(t, op, err)
	got, err = c.instances.Get(ctx, &computepb.GetInstanceRequest{Project: proj, Zone: zone, Instance: name})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetLabels()["stage"] != "two" || len(got.GetMetadata().GetItems()) != 2 {
		t.Errorf("after setLabels and setMetadata: labels %v, metadata %v", got.GetLabels(), got.GetMetadata().GetItems())
	}

	op, err = c.instances.Stop(ctx, &computepb.StopInstanceRequest{Project: proj, Zone: zone, Instance: name})
	done(t, op, err)
	got, _ = c.instances.Get(ctx, &computepb.GetInstanceRequest{Project: proj, Zone: zone, Instance: name})
	if got.GetStatus() != "TERMINATED" {
		t.Errorf("after stop: %s", got.GetStatus())
	}
	op, err = c.instances.Start(ctx, &computepb.StartInstanceRequest{Project: proj, Zone: zone, Instance: name})
	done(t, op, err)
	waitFor(t, "the restarted container to listen again", func() bool {
		out, err := c.instances.GetSerialPortOutput(ctx, &computepb.GetSerialPortOutputInstanceRequest{Project: proj, Zone: zone, Instance: name})
		return err == nil && strings.Count(out.GetContents(), "workload "+name+" listening") == 2
	})

	for _, in := range list {
		op, err = c.instances.Delete(ctx, &computepb.DeleteInstanceRequest{Project: proj, Zone: zone, Instance: in.GetName()})
		done(t, op, err)
	}
	if left := all(t, c.instances.List(ctx, &computepb.ListInstancesRequest{Project: proj, Zone: zone}).Next); len(left) != 0 {
		t.Errorf("after delete: %v", names(left))
	}
}

func names(ins []*computepb.Instance) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.GetName())
	}
	return out
}

// TestCloudClientLibraryFleet covers the global and group resources a fleet
// is made of: templates, managed instance groups, firewalls and global
// operations.
func TestCloudClientLibraryFleet(t *testing.T) {
	e := start(t, emulator.Options{})
	c := newCCL(t, e)
	ctx := context.Background()

	op, err := c.templates.Insert(ctx, &computepb.InsertInstanceTemplateRequest{Project: proj, InstanceTemplateResource: &computepb.InstanceTemplate{
		Name: new("ccl-tmpl-v1"),
		Properties: &computepb.InstanceProperties{
			MachineType: new("e2-standard-2"),
			Labels:      map[string]string{"fleet": "ccl"},
			Disks: []*computepb.AttachedDisk{{Boot: new(true), InitializeParams: &computepb.AttachedDiskInitializeParams{
				SourceImage: new("projects/debian-cloud/global/images/family/debian-12")}}},
			NetworkInterfaces: []*computepb.NetworkInterface{{}},
		},
	}})
	done(t, op, err)
	tmplOp := op.Name()
	tmpl, err := c.templates.Get(ctx, &computepb.GetInstanceTemplateRequest{Project: proj, InstanceTemplate: "ccl-tmpl-v1"})
	if err != nil || tmpl.GetProperties().GetMachineType() != "e2-standard-2" {
		t.Fatalf("instanceTemplates.get: %v, %v", tmpl, err)
	}
	if ts := all(t, c.templates.List(ctx, &computepb.ListInstanceTemplatesRequest{Project: proj}).Next); len(ts) != 1 {
		t.Errorf("instanceTemplates.list: %d", len(ts))
	}

	op, err = c.groups.Insert(ctx, &computepb.InsertInstanceGroupManagerRequest{Project: proj, Zone: zone, InstanceGroupManagerResource: &computepb.InstanceGroupManager{
		Name: new("ccl-group"), BaseInstanceName: new("ccl-w"), InstanceTemplate: tmpl.SelfLink, TargetSize: new(int32(2)),
	}})
	done(t, op, err)
	managed := func() []*computepb.ManagedInstance {
		return all(t, c.groups.ListManagedInstances(ctx, &computepb.ListManagedInstancesInstanceGroupManagersRequest{
			Project: proj, Zone: zone, InstanceGroupManager: "ccl-group"}).Next)
	}
	settled := func(n int) func() bool {
		return func() bool {
			g, err := c.groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: proj, Zone: zone, InstanceGroupManager: "ccl-group"})
			if err != nil || !g.GetStatus().GetIsStable() || g.GetTargetSize() != int32(n) {
				return false
			}
			ms := managed()
			for _, m := range ms {
				if m.GetInstanceStatus() != "RUNNING" || m.GetCurrentAction() != "NONE" {
					return false
				}
			}
			return len(ms) == n
		}
	}
	waitFor(t, "the group to reach 2", settled(2))

	op, err = c.groups.Resize(ctx, &computepb.ResizeInstanceGroupManagerRequest{Project: proj, Zone: zone, InstanceGroupManager: "ccl-group", Size: 3})
	done(t, op, err)
	waitFor(t, "the group to reach 3", settled(3))

	op, err = c.groups.CreateInstances(ctx, &computepb.CreateInstancesInstanceGroupManagerRequest{Project: proj, Zone: zone, InstanceGroupManager: "ccl-group",
		InstanceGroupManagersCreateInstancesRequestResource: &computepb.InstanceGroupManagersCreateInstancesRequest{
			Instances: []*computepb.PerInstanceConfig{{Name: new("ccl-named")}}}})
	done(t, op, err)
	waitFor(t, "the named instance to join", settled(4))

	ms := managed()
	victim := ms[0].GetInstance()
	op, err = c.groups.DeleteInstances(ctx, &computepb.DeleteInstancesInstanceGroupManagerRequest{Project: proj, Zone: zone, InstanceGroupManager: "ccl-group",
		InstanceGroupManagersDeleteInstancesRequestResource: &computepb.InstanceGroupManagersDeleteInstancesRequest{Instances: []string{victim}}})
	done(t, op, err)
	waitFor(t, "the group to shrink to 3", settled(3))
	for _, m := range managed() {
		if m.GetInstance() == victim {
			t.Errorf("deleted instance %s is still managed", victim)
		}
	}
	if gs := all(t, c.groups.List(ctx, &computepb.ListInstanceGroupManagersRequest{Project: proj, Zone: zone}).Next); len(gs) != 1 {
		t.Errorf("instanceGroupManagers.list: %d", len(gs))
	}

	// The template cannot go while the group uses it; once the group is
	// gone, it can.
	_, err = c.templates.Delete(ctx, &computepb.DeleteInstanceTemplateRequest{Project: proj, InstanceTemplate: "ccl-tmpl-v1"})
	var ge *googleapi.Error
	if !errors.As(err, &ge) || ge.Code != 400 || !strings.Contains(ge.Message, "already being used") {
		t.Errorf("deleting a template in use: %v", err)
	}
	op, err = c.groups.Delete(ctx, &computepb.DeleteInstanceGroupManagerRequest{Project: proj, Zone: zone, InstanceGroupManager: "ccl-group"})
	done(t, op, err)
	if left := all(t, c.instances.List(ctx, &computepb.ListInstancesRequest{Project: proj, Zone: zone}).Next); len(left) != 0 {
		t.Errorf("instances left after the group was deleted: %v", names(left))
	}
	op, err = c.templates.Delete(ctx, &computepb.DeleteInstanceTemplateRequest{Project: proj, InstanceTemplate: "ccl-tmpl-v1"})
	done(t, op, err)

	op, err = c.firewalls.Insert(ctx, &computepb.InsertFirewallRequest{Project: proj, FirewallResource: &computepb.Firewall{
		Name: new("ccl-allow-8443"), Network: new("global/networks/default"), Direction: new("INGRESS"),
		SourceRanges: []string{"10.0.0.0/8"}, TargetTags: []string{"ccl"},
		Allowed: []*computepb.Allowed{{IPProtocol: new("tcp"), Ports: []string{"8443"}}},
	}})
	done(t, op, err)
	fw, err := c.firewalls.Get(ctx, &computepb.GetFirewallRequest{Project: proj, Firewall: "ccl-allow-8443"})
	if err != nil || fw.GetAllowed()[0].GetPorts()[0] != "8443" || fw.GetTargetTags()[0] != "ccl" {
		t.Errorf("firewalls.get: %v, %v", fw, err)
	}
	if fws := all(t, c.firewalls.List(ctx, &computepb.ListFirewallsRequest{Project: proj}).Next); len(fws) != 1 {
		t.Errorf("firewalls.list: %d", len(fws))
	}
	op, err = c.firewalls.Delete(ctx, &computepb.DeleteFirewallRequest{Project: proj, Firewall: "ccl-allow-8443"})
	done(t, op, err)
	_, err = c.firewalls.Get(ctx, &computepb.GetFirewallRequest{Project: proj, Firewall: "ccl-allow-8443"})
	if !errors.As(err, &ge) || ge.Code != 404 {
		t.Errorf("firewall after delete: %v, want 404", err)
	}

	// Global operations: get, wait, list, delete.
	g, err := c.globalOps.Get(ctx, &computepb.GetGlobalOperationRequest{Project: proj, Operation: tmplOp})
	if err != nil || g.GetStatus() != computepb.Operation_DONE || g.GetOperationType() != "compute.instanceTemplates.insert" {
		t.Errorf("globalOperations.get: %v, %v", g, err)
	}
	g, err = c.globalOps.Wait(ctx, &computepb.WaitGlobalOperationRequest{Project: proj, Operation: tmplOp})
	if err != nil || g.GetStatus() != computepb.Operation_DONE {
		t.Errorf("globalOperations.wait: %v, %v", g, err)
	}
	ops := all(t, c.globalOps.List(ctx, &computepb.ListGlobalOperationsRequest{Project: proj}).Next)
	if len(ops) != 4 { // template insert and delete, firewall insert and delete
		t.Errorf("globalOperations.list: %d operations, want 4", len(ops))
	}
	if _, err := c.globalOps.Delete(ctx, &computepb.DeleteGlobalOperationRequest{Project: proj, Operation: tmplOp}); err != nil {
		t.Errorf("globalOperations.delete: %v", err)
	}
	_, err = c.globalOps.Get(ctx, &computepb.GetGlobalOperationRequest{Project: proj, Operation: tmplOp})
	if !errors.As(err, &ge) || ge.Code != 404 {
		t.Errorf("a deleted operation: %v, want 404", err)
	}
	// No regional mutation ran, so the region has no operations; the list
	// call itself must work.
	if rops := all(t, c.regionOps.List(ctx, &computepb.ListRegionOperationsRequest{Project: proj, Region: "us-central1"}).Next); len(rops) != 0 {
		t.Errorf("regionOperations.list: %d", len(rops))
	}
}
