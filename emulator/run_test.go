package emulator_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"
	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/emulator"
)

const workloadImage = "gcr.io/test-project/workload"

func workloadOptions(t *testing.T) emulator.Options {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return emulator.Options{Images: map[string]string{workloadImage: exe}, StopGrace: 2 * time.Second}
}

// containerVM is an instance whose container runs the test workload.
func containerVM(name, restart string, extraEnv ...string) *compute.Instance {
	in := vm(name)
	decl := "spec:\n  containers:\n  - name: " + name + "\n    image: " + workloadImage + ":v1\n    env:\n    - name: EMULATOR_TEST_WORKLOAD\n      value: \"1\"\n"
	for _, kv := range extraEnv {
		k, v, _ := strings.Cut(kv, "=")
		decl += "    - name: " + k + "\n      value: \"" + v + "\"\n"
	}
	decl += "  restartPolicy: " + restart + "\n"
	greeting := "hello from the test"
	in.Metadata = &compute.Metadata{Items: []*compute.MetadataItems{
		{Key: "gce-container-declaration", Value: &decl},
		{Key: "greeting", Value: &greeting},
	}}
	in.ServiceAccounts = []*compute.ServiceAccount{{Email: "default", Scopes: []string{"https://www.googleapis.com/auth/cloud-platform"}}}
	return in
}

func serial(t *testing.T, e *env, name string) string {
	t.Helper()
	out, err := e.svc.Instances.GetSerialPortOutput(proj, zone, name).Do()
	if err != nil {
		t.Fatal(err)
	}
	return out.Contents
}

func TestContainerRunsWithMetadata(t *testing.T) {
	e := start(t, workloadOptions(t))
	e.ok(t)(e.svc.Instances.Insert(proj, zone, containerVM("app-1", "Never")).Do())
	e.ok(t)(e.svc.Instances.Insert(proj, zone, containerVM("app-2", "Never")).Do())
	for _, name := range []string{"app-1", "app-2"} {
		in, err := e.svc.Instances.Get(proj, zone, name).Do()
		if err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort(in.NetworkInterfaces[0].NetworkIP, "8080")
		waitFor(t, name+" to listen on "+addr, func() bool {
			return strings.Contains(serial(t, e, name), "listening on "+addr)
		})
		// Both instances listen on port 8080, each on its own address.
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := proj + "/" + zone + "/" + name + ": hello from the test"; string(body) != want {
			t.Errorf("%s answered %q, want %q", name, body, want)
		}
	}
	// Serial output pages from an offset.
	out, _ := e.svc.Instances.GetSerialPortOutput(proj, zone, "app-1").Do()
	rest, _ := e.svc.Instances.GetSerialPortOutput(proj, zone, "app-1").Start(out.Next).Do()
	if rest.Start != out.Next || rest.Contents != "" {
		t.Errorf("reading from next=%d: start %d, contents %q", out.Next, rest.Start, rest.Contents)
	}
	// A negative start reads the most recent bytes.
	last, _ := e.svc.Instances.GetSerialPortOutput(proj, zone, "app-1").Start(-10).Do()
	if last.Start != out.Next-10 || last.Next != out.Next || last.Contents != out.Contents[len(out.Contents)-10:] {
		t.Errorf("reading the last 10 bytes of %d: start %d, next %d, contents %q", out.Next, last.Start, last.Next, last.Contents)
	}
	all, _ := e.svc.Instances.GetSerialPortOutput(proj, zone, "app-1").Start(-1 << 40).Do()
	if all.Start != 0 || all.Contents != out.Contents {
		t.Errorf("reading more than was written: start %d, %d bytes of %d", all.Start, len(all.Contents), len(out.Contents))
	}

	// Deleting the instance stops its process.
	in, _ := e.svc.Instances.Get(proj, zone, "app-1").Do()
	addr := net.JoinHostPort(in.NetworkInterfaces[0].NetworkIP, "8080")
	e.ok(t)(e.svc.Instances.Delete(proj, zone, "app-1").Do())
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the instance was deleted", addr)
	}
}

func TestContainerExitTerminatesInstance(t *testing.T) {
	e := start(t, workloadOptions(t))
	e.ok(t)(e.svc.Instances.Insert(proj, zone, containerVM("short", "Never", "EXIT_AT_ONCE=1")).Do())
	waitFor(t, "the instance to be TERMINATED after its container exited", func() bool {
		in, err := e.svc.Instances.Get(proj, zone, "short").Do()
		return err == nil && in.Status == "TERMINATED"
	})
	if s := serial(t, e, "short"); !strings.Contains(s, "workload exiting at once") || !strings.Contains(s, "exit status 3") {
		t.Errorf("serial output lacks the container's words and exit: %q", s)
	}
}

func TestUnknownImageIsReported(t *testing.T) {
	e := start(t, emulator.Options{})
	e.ok(t)(e.svc.Instances.Insert(proj, zone, containerVM("nope", "Never")).Do())
	if s := serial(t, e, "nope"); !strings.Contains(s, "is not known to the emulator") || !strings.Contains(s, "--image") {
		t.Errorf("serial output %q does not say how to map the image", s)
	}
}

func TestMetadataServer(t *testing.T) {
	e := start(t, workloadOptions(t))
	e.ok(t)(e.svc.Instances.Insert(proj, zone, containerVM("md", "Never")).Do())
	in, _ := e.svc.Instances.Get(proj, zone, "md").Do()
	addr := net.JoinHostPort(in.NetworkInterfaces[0].NetworkIP, "8080")
	waitFor(t, "the workload", func() bool { return strings.Contains(serial(t, e, "md"), "listening on "+addr) })
	host := metadataHost(t, e, "md")
	get := func(path string, header bool) (int, string, http.Header) {
		req, _ := http.NewRequest("GET", "http://"+host+"/computeMetadata/v1/"+path, nil)
		if header {
			req.Header.Set("Metadata-Flavor", "Google")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	if code, _, _ := get("instance/name", false); code != 403 {
		t.Errorf("without Metadata-Flavor: %d, want 403", code)
	}
	if code, body, h := get("instance/name", true); code != 200 || body != "md" || h.Get("Metadata-Flavor") != "Google" {
		t.Errorf("instance/name: %d %q", code, body)
	}
	if _, body, _ := get("instance/attributes/?recursive=true", true); !strings.Contains(body, `"greeting":"hello from the test"`) ||
		!strings.Contains(body, `"gce-container-declaration":`) {
		t.Errorf("recursive attributes, keys as written: %s", body)
	}
	if _, body, _ := get("instance/?recursive=true", true); !strings.Contains(body, `"networkInterfaces":[{`) || !strings.Contains(body, `"machineType":`) {
		t.Errorf("recursive instance JSON is not camelCase with lists: %s", body)
	}
	if _, body, _ := get("instance/service-accounts/default/token", true); !strings.Contains(body, `"access_token"`) {
		t.Errorf("token: %s", body)
	}
	// wait_for_change answers once metadata changes.
	_, _, h := get("instance/attributes/greeting", true)
	etag := h.Get("ETag")
	changed := make(chan string, 1)
	go func() {
		_, body, _ := get("instance/attributes/greeting?wait_for_change=true&last_etag="+etag, true)
		changed <- body
	}()
	v := "changed"
	e.ok(t)(e.svc.Instances.SetMetadata(proj, zone, "md", &compute.Metadata{Fingerprint: in.Metadata.Fingerprint, Items: []*compute.MetadataItems{{Key: "greeting", Value: &v}}}).Do())
	select {
	case body := <-changed:
		if body != "changed" {
			t.Errorf("wait_for_change answered %q, want the new value", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait_for_change did not answer after the metadata changed")
	}
}

// metadataHost finds the metadata server of an instance: it listens on the
// instance's own address.
func metadataHost(t *testing.T, e *env, name string) string {
	t.Helper()
	s := serial(t, e, name)
	i := strings.Index(s, "GCE_METADATA_HOST=")
	if i < 0 {
		t.Fatalf("serial output does not name the metadata server: %q", s)
	}
	host, _, _ := strings.Cut(s[i+len("GCE_METADATA_HOST="):], "\n")
	return strings.TrimSpace(host)
}

func TestManagedInstanceGroup(t *testing.T) {
	e := start(t, emulator.Options{})
	tmpl := &compute.InstanceTemplate{Name: "worker-v1", Properties: &compute.InstanceProperties{
		MachineType:       "e2-standard-4",
		Labels:            map[string]string{"fleet": "workers"},
		Disks:             []*compute.AttachedDisk{{Boot: true, InitializeParams: &compute.AttachedDiskInitializeParams{SourceImage: "projects/cos-cloud/global/images/family/cos-stable"}}},
		NetworkInterfaces: []*compute.NetworkInterface{{}},
	}}
	e.ok(t)(e.svc.InstanceTemplates.Insert(proj, tmpl).Do())
	if _, err := e.svc.InstanceTemplates.Insert(proj, tmpl).Do(); apiErr(t, err).Code != 409 {
		t.Errorf("duplicate template: %v", err)
	}
	e.ok(t)(e.svc.InstanceGroupManagers.Insert(proj, zone, &compute.InstanceGroupManager{
		Name: "workers", BaseInstanceName: "worker", InstanceTemplate: "global/instanceTemplates/worker-v1", TargetSize: 3,
		ListManagedInstancesResults: "PAGINATED",
	}).Do())
	stable := func(n int) func() bool {
		return func() bool {
			g, err := e.svc.InstanceGroupManagers.Get(proj, zone, "workers").Do()
			if err != nil || !g.Status.IsStable || g.TargetSize != int64(n) {
				return false
			}
			l, _ := e.svc.Instances.List(proj, zone).Filter("labels.fleet = workers AND status = RUNNING").Do()
			return len(l.Items) == n
		}
	}
	waitFor(t, "the group to reach 3", stable(3))

	// The template cannot go while the group uses it.
	_, err := e.svc.InstanceTemplates.Delete(proj, "worker-v1").Do()
	if ge := apiErr(t, err); ge.Code != 400 || ge.Errors[0].Reason != "resourceInUseByAnotherResource" {
		t.Errorf("deleting a template in use: %v", err)
	}

	e.ok(t)(e.svc.InstanceGroupManagers.Resize(proj, zone, "workers", 5).Do())
	waitFor(t, "the group to reach 5", stable(5))

	mis, err := e.svc.InstanceGroupManagers.ListManagedInstances(proj, zone, "workers").MaxResults(2).Do()
	if err != nil {
		t.Fatal(err)
	}
	if len(mis.ManagedInstances) != 2 || mis.NextPageToken == "" {
		t.Errorf("paginated listManagedInstances: %d items, token %q", len(mis.ManagedInstances), mis.NextPageToken)
	}
	// aggregatedList finds the group in its zone, and says of other zones
	// that they have none.
	agg, err := e.svc.InstanceGroupManagers.AggregatedList(proj).Do()
	if err != nil {
		t.Fatal(err)
	}
	if sl := agg.Items["zones/"+zone]; len(sl.InstanceGroupManagers) != 1 || sl.InstanceGroupManagers[0].Name != "workers" ||
		agg.Items["zones/europe-west1-b"].Warning == nil || agg.Items["zones/europe-west1-b"].Warning.Code != "NO_RESULTS_ON_PAGE" {
		t.Errorf("aggregated groups: %+v", agg.Items)
	}
	victim := mis.ManagedInstances[0]
	if !strings.HasPrefix(victim.Name, "worker-") || len(victim.Name) != len("worker-xxxx") || victim.CurrentAction != "NONE" || victim.InstanceStatus != "RUNNING" {
		t.Errorf("managed instance %+v", victim)
	}

	// Autohealing: an instance deleted behind the group's back comes back
	// under the same name.
	e.ok(t)(e.svc.Instances.Delete(proj, zone, victim.Name).Do())
	waitFor(t, "the group to recreate "+victim.Name, func() bool {
		in, err := e.svc.Instances.Get(proj, zone, victim.Name).Do()
		return err == nil && in.Status == "RUNNING" && in.Id != victim.Id
	})

	// deleteInstances lowers the target and removes the instance.
	e.ok(t)(e.svc.InstanceGroupManagers.DeleteInstances(proj, zone, "workers", &compute.InstanceGroupManagersDeleteInstancesRequest{
		Instances: []string{"zones/" + zone + "/instances/" + victim.Name},
	}).Do())
	waitFor(t, "the group to shrink to 4", stable(4))
	if _, err := e.svc.Instances.Get(proj, zone, victim.Name).Do(); apiErr(t, err).Code != 404 {
		t.Errorf("deleted member still exists: %v", err)
	}
	// createInstances adds named members.
	e.ok(t)(e.svc.InstanceGroupManagers.CreateInstances(proj, zone, "workers", &compute.InstanceGroupManagersCreateInstancesRequest{
		Instances: []*compute.PerInstanceConfig{{Name: "worker-named"}},
	}).Do())
	waitFor(t, "the named member", stable(5))

	// Stockout: members wait in CREATING with the error as their last attempt.
	e.emu.AddStockout(emulator.Stockout{Zone: zone})
	e.ok(t)(e.svc.InstanceGroupManagers.Resize(proj, zone, "workers", 6).Do())
	waitFor(t, "a CREATING member with a stockout error", func() bool {
		all, err := e.svc.InstanceGroupManagers.ListManagedInstances(proj, zone, "workers").Do()
		if err != nil {
			return false
		}
		for _, mi := range all.ManagedInstances {
			if mi.CurrentAction == "CREATING" && mi.LastAttempt != nil && mi.LastAttempt.Errors.Errors[0].Code == "ZONE_RESOURCE_POOL_EXHAUSTED" {
				return true
			}
		}
		return false
	})
	e.emu.ClearFaults()
	waitFor(t, "the group to reach 6 once capacity returns", stable(6))

	// Deleting the group deletes its instances; then the template can go.
	e.ok(t)(e.svc.InstanceGroupManagers.Delete(proj, zone, "workers").Do())
	if l, _ := e.svc.Instances.List(proj, zone).Do(); len(l.Items) != 0 {
		t.Errorf("%d instances left after the group was deleted", len(l.Items))
	}
	e.ok(t)(e.svc.InstanceTemplates.Delete(proj, "worker-v1").Do())
}

func TestPreemption(t *testing.T) {
	e := start(t, emulator.Options{})
	for _, action := range []string{"STOP", "DELETE"} {
		name := "spot-" + strings.ToLower(action)
		in := vm(name)
		in.Scheduling = &compute.Scheduling{ProvisioningModel: "SPOT", InstanceTerminationAction: action}
		e.ok(t)(e.svc.Instances.Insert(proj, zone, in).Do())
		if err := e.emu.Preempt(proj, zone, name); err != nil {
			t.Fatal(err)
		}
		waitFor(t, name+" to end", func() bool {
			got, err := e.svc.Instances.Get(proj, zone, name).Do()
			if action == "DELETE" {
				var ge *googleapi.Error
				return errors.As(err, &ge) && ge.Code == 404
			}
			return err == nil && got.Status == "TERMINATED"
		})
	}
	ops, err := e.svc.ZoneOperations.List(proj, zone).Filter(`operationType = "compute.instances.preempted"`).Do()
	if err != nil {
		t.Fatal(err)
	}
	if len(ops.Items) != 2 || ops.Items[0].Status != "DONE" {
		t.Errorf("preemption operations: %+v", ops.Items)
	}
	if err := e.emu.Preempt(proj, zone, "spot-stop"); err == nil {
		t.Error("preempting a TERMINATED instance succeeded")
	}
}

func TestMaxRunDuration(t *testing.T) {
	e := start(t, emulator.Options{RunDurationUnit: time.Millisecond})
	for _, action := range []string{"STOP", "DELETE"} {
		name := "capped-" + strings.ToLower(action)
		in := vm(name)
		in.Scheduling = &compute.Scheduling{InstanceTerminationAction: action, MaxRunDuration: &compute.Duration{Seconds: 30}}
		e.ok(t)(e.svc.Instances.Insert(proj, zone, in).Do())
		waitFor(t, name+" to expire", func() bool {
			got, err := e.svc.Instances.Get(proj, zone, name).Do()
			if action == "DELETE" {
				return err != nil
			}
			return err == nil && got.Status == "TERMINATED"
		})
	}
}

// TestCloudClientLibrary drives the emulator through
// cloud.google.com/go/compute/apiv1, which needs only the host as endpoint.
func TestCloudClientLibrary(t *testing.T) {
	e := start(t, emulator.Options{})
	ctx := context.Background()
	opts := []option.ClientOption{option.WithEndpoint(e.url), option.WithoutAuthentication()}
	instances, err := computeapi.NewInstancesRESTClient(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer instances.Close()
	str := func(s string) *string { return &s }
	insert := func(name, machineType string) (*computeapi.Operation, error) {
		return instances.Insert(ctx, &computepb.InsertInstanceRequest{Project: proj, Zone: zone, InstanceResource: &computepb.Instance{
			Name:        str(name),
			MachineType: str("zones/" + zone + "/machineTypes/" + machineType),
			Labels:      map[string]string{"client": "ccl"},
			Disks: []*computepb.AttachedDisk{{Boot: new(true), InitializeParams: &computepb.AttachedDiskInitializeParams{
				SourceImage: str("projects/debian-cloud/global/images/family/debian-12")}}},
			NetworkInterfaces: []*computepb.NetworkInterface{{}},
		}})
	}
	op, err := insert("ccl-1", "n2-standard-2")
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := instances.Get(ctx, &computepb.GetInstanceRequest{Project: proj, Zone: zone, Instance: "ccl-1"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetStatus() != "RUNNING" || got.GetId() == 0 || got.GetLabels()["client"] != "ccl" {
		t.Errorf("instance %v", got)
	}
	it := instances.List(ctx, &computepb.ListInstancesRequest{Project: proj, Zone: zone, Filter: str(`labels.client = "ccl"`)})
	n := 0
	for {
		_, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Errorf("list found %d instances, want 1", n)
	}
	agg := instances.AggregatedList(ctx, &computepb.AggregatedListInstancesRequest{Project: proj})
	found := 0
	for {
		pair, err := agg.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		found += len(pair.Value.GetInstances())
	}
	if found != 1 {
		t.Errorf("aggregatedList found %d instances, want 1", found)
	}

	// Errors decode into the library's error type.
	_, err = instances.Get(ctx, &computepb.GetInstanceRequest{Project: proj, Zone: zone, Instance: "missing"})
	var ge *googleapi.Error
	if !errors.As(err, &ge) || ge.Code != 404 {
		t.Errorf("get missing: %v, want a 404 googleapi.Error", err)
	}
	// A failed operation fails Wait, through httpErrorStatusCode.
	e.emu.SetQuota(proj, "us-central1", "CPUS", 3)
	op, err = insert("ccl-2", "n2-standard-2")
	if err != nil {
		t.Fatal(err)
	}
	err = op.Wait(ctx)
	if !errors.As(err, &ge) || ge.Code != 403 || !strings.Contains(ge.Message, "QUOTA_EXCEEDED") {
		t.Errorf("Wait on a quota failure: %v, want a 403 naming QUOTA_EXCEEDED", err)
	}

	zones, err := computeapi.NewZoneOperationsRESTClient(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer zones.Close()
	waited, err := zones.Wait(ctx, &computepb.WaitZoneOperationRequest{Project: proj, Zone: zone, Operation: op.Name()})
	if err != nil || waited.GetStatus() != computepb.Operation_DONE || waited.GetError() == nil {
		t.Errorf("zoneOperations.wait: %v, %v", waited, err)
	}
}

// TestGuestBoot: with a guest boot time, an instance is RUNNING before its
// container starts, as on GCE, and the container starts once it has passed.
func TestGuestBoot(t *testing.T) {
	e := start(t, workloadOptions(t))
	e.emu.SetLatency(emulator.Latency{Guest: time.Hour})
	e.ok(t)(e.svc.Instances.Insert(proj, zone, containerVM("slow", "Never")).Do())
	in, err := e.svc.Instances.Get(proj, zone, "slow").Do()
	if err != nil || in.Status != "RUNNING" {
		t.Fatalf("instance while its guest boots: %v, %v", in, err)
	}
	if out := serial(t, e, "slow"); !strings.Contains(out, "the guest OS boots (1h0m0s)") || strings.Contains(out, "launching user container") {
		t.Errorf("serial port while the guest boots:\n%s", out)
	}

	e.emu.SetLatency(emulator.Latency{Guest: 50 * time.Millisecond})
	e.ok(t)(e.svc.Instances.Insert(proj, zone, containerVM("quick", "Never")).Do())
	waitFor(t, "the container to start after the guest boots", func() bool {
		return strings.Contains(serial(t, e, "quick"), "listening on ")
	})
}
