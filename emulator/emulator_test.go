package emulator_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/compute/metadata"
	"google.golang.org/api/cloudresourcemanager/v1"
	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
)

const (
	proj = "test-project"
	zone = "us-central1-a"
)

// TestMain doubles as the container workload: an instance whose image maps
// to the test binary runs workload instead of the tests.
func TestMain(m *testing.M) {
	if os.Getenv("EMULATOR_TEST_WORKLOAD") == "1" {
		workload()
		return
	}
	os.Exit(m.Run())
}

// workload is what the test container runs: it learns who it is from the
// metadata server, listens on its own address and answers with what it
// learned.
func workload() {
	ctx := context.Background()
	ip, err := metadata.InternalIPWithContext(ctx)
	if err != nil {
		fmt.Println("metadata:", err)
		os.Exit(1)
	}
	name, _ := metadata.InstanceNameWithContext(ctx)
	z, _ := metadata.ZoneWithContext(ctx)
	project, _ := metadata.ProjectIDWithContext(ctx)
	greeting, _ := metadata.InstanceAttributeValueWithContext(ctx, "greeting")
	if os.Getenv("EXIT_AT_ONCE") != "" {
		fmt.Println("workload exiting at once")
		os.Exit(3)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "8080"))
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	fmt.Printf("workload %s listening on %s\n", name, ln.Addr())
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s/%s/%s: %s", project, z, name, greeting)
	}))
}

// env is one emulator under test with a discovery client on it.
type env struct {
	emu *emulator.Emulator
	url string
	svc *compute.Service
}

func start(t *testing.T, opts emulator.Options) *env {
	t.Helper()
	emu := emulator.New(opts)
	srv := httptest.NewServer(schemaChecker(t, emu))
	t.Cleanup(func() {
		emu.Close()
		srv.Close()
	})
	svc, err := compute.NewService(context.Background(), option.WithEndpoint(srv.URL+"/compute/v1/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	return &env{emu: emu, url: srv.URL, svc: svc}
}

// wait waits for a zonal operation to be DONE and returns it.
func (e *env) wait(t *testing.T, op *compute.Operation) *compute.Operation {
	t.Helper()
	for op.Status != "DONE" {
		var err error
		switch {
		case op.Zone != "":
			op, err = e.svc.ZoneOperations.Wait(proj, lastSeg(op.Zone), op.Name).Do()
		case op.Region != "":
			op, err = e.svc.RegionOperations.Wait(proj, lastSeg(op.Region), op.Name).Do()
		default:
			op, err = e.svc.GlobalOperations.Wait(proj, op.Name).Do()
		}
		if err != nil {
			t.Fatalf("waiting for operation: %v", err)
		}
	}
	return op
}

// ok returns a function that waits for a call's operation and fails the
// test if the call or the operation failed: e.ok(t)(call.Do()).
func (e *env) ok(t *testing.T) func(*compute.Operation, error) *compute.Operation {
	return func(op *compute.Operation, err error) *compute.Operation {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		op = e.wait(t, op)
		if op.Error != nil {
			t.Fatalf("operation %s failed: %+v", op.OperationType, op.Error.Errors[0])
		}
		return op
	}
}

func lastSeg(s string) string { return s[strings.LastIndexByte(s, '/')+1:] }

// waitFor polls cond until it holds: convergence in the emulator is
// asynchronous by design, as in GCE.
var waitFor = testutil.WaitFor

func vm(name string) *compute.Instance {
	return &compute.Instance{
		Name:              name,
		MachineType:       "zones/" + zone + "/machineTypes/e2-standard-2",
		Disks:             []*compute.AttachedDisk{{Boot: true, AutoDelete: true, InitializeParams: &compute.AttachedDiskInitializeParams{SourceImage: "projects/cos-cloud/global/images/family/cos-stable"}}},
		NetworkInterfaces: []*compute.NetworkInterface{{Network: "global/networks/default"}},
	}
}

func apiErr(t *testing.T, err error) *googleapi.Error {
	t.Helper()
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		t.Fatalf("got error %v (%T), want a *googleapi.Error", err, err)
	}
	return ge
}

func TestCatalog(t *testing.T) {
	e := start(t, emulator.Options{})
	zones, err := e.svc.Zones.List(proj).Do()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, z := range zones.Items {
		names = append(names, z.Name)
	}
	for _, want := range []string{"us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f", "us-east1-b", "us-east1-c", "us-east1-d", "us-west1-a", "us-west1-b", "us-west1-c", "europe-west1-b", "europe-west1-c", "europe-west1-d"} {
		if !slices.Contains(names, want) {
			t.Errorf("zones.list lacks %s", want)
		}
	}
	r, err := e.svc.Regions.Get(proj, "us-central1").Do()
	if err != nil {
		t.Fatal(err)
	}
	metrics := map[string]bool{}
	for _, q := range r.Quotas {
		metrics[q.Metric] = true
	}
	for _, m := range []string{"CPUS", "INSTANCES", "IN_USE_ADDRESSES"} {
		if !metrics[m] {
			t.Errorf("region quotas lack %s", m)
		}
	}
	for _, tc := range []struct {
		name       string
		cpus, memM int64
	}{{"e2-micro", 2, 1024}, {"e2-standard-32", 32, 131072}, {"n2-standard-128", 128, 524288}, {"c3-standard-8", 8, 32768}} {
		mt, err := e.svc.MachineTypes.Get(proj, zone, tc.name).Do()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if mt.GuestCpus != tc.cpus || mt.MemoryMb != tc.memM {
			t.Errorf("%s: %d CPUs %d MB, want %d and %d", tc.name, mt.GuestCpus, mt.MemoryMb, tc.cpus, tc.memM)
		}
	}
	if _, err := e.svc.MachineTypes.Get(proj, zone, "n9-giant").Do(); apiErr(t, err).Code != 404 {
		t.Errorf("unknown machine type: %v, want 404", err)
	}
	for _, f := range []struct{ project, family string }{{"cos-cloud", "cos-stable"}, {"debian-cloud", "debian-12"}} {
		im, err := e.svc.Images.GetFromFamily(f.project, f.family).Do()
		if err != nil {
			t.Fatalf("%s/%s: %v", f.project, f.family, err)
		}
		if im.Family != f.family || im.Status != "READY" {
			t.Errorf("getFromFamily %s: %+v", f.family, im)
		}
	}
	if _, err := e.svc.Zones.Get(proj, "mars-north1-a").Do(); apiErr(t, err).Code != 400 {
		t.Errorf("unknown zone: %v, want 400", err)
	}
}

func TestInstanceLifecycle(t *testing.T) {
	e := start(t, emulator.Options{})
	in := vm("web-1")
	in.Labels = map[string]string{"owner": "ci"}
	op := e.ok(t)(e.svc.Instances.Insert(proj, zone, in).Do())
	if op.OperationType != "insert" || !strings.HasSuffix(op.TargetLink, "/zones/us-central1-a/instances/web-1") {
		t.Errorf("insert operation: %+v", op)
	}
	got, err := e.svc.Instances.Get(proj, zone, "web-1").Do()
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != "RUNNING" {
		t.Errorf("status %s, want RUNNING", got.Status)
	}
	if got.SelfLink != "https://www.googleapis.com/compute/v1/projects/test-project/zones/us-central1-a/instances/web-1" {
		t.Errorf("selfLink %s", got.SelfLink)
	}
	if ip := got.NetworkInterfaces[0].NetworkIP; !strings.HasPrefix(ip, "127.") {
		t.Errorf("networkIP %s, want a loopback address", ip)
	}
	if got.Id == 0 || got.CreationTimestamp == "" {
		t.Errorf("id %d, creationTimestamp %q", got.Id, got.CreationTimestamp)
	}
	if _, err := time.Parse(time.RFC3339, got.CreationTimestamp); err != nil {
		t.Errorf("creationTimestamp: %v", err)
	}

	// A second instance of the same name is refused at once.
	if _, err := e.svc.Instances.Insert(proj, zone, vm("web-1")).Do(); apiErr(t, err).Code != 409 {
		t.Errorf("duplicate insert: %v, want 409", err)
	}

	// Labels and metadata are guarded by fingerprints.
	_, err = e.svc.Instances.SetLabels(proj, zone, "web-1", &compute.InstancesSetLabelsRequest{Labels: map[string]string{"owner": "x"}, LabelFingerprint: "stale"}).Do()
	if ge := apiErr(t, err); ge.Code != 412 || ge.Errors[0].Reason != "conditionNotMet" {
		t.Errorf("stale label fingerprint: %v, want 412 conditionNotMet", err)
	}
	e.ok(t)(e.svc.Instances.SetLabels(proj, zone, "web-1", &compute.InstancesSetLabelsRequest{Labels: map[string]string{"owner": "ops"}, LabelFingerprint: got.LabelFingerprint}).Do())
	v := "hello"
	e.ok(t)(e.svc.Instances.SetMetadata(proj, zone, "web-1", &compute.Metadata{Fingerprint: got.Metadata.Fingerprint, Items: []*compute.MetadataItems{{Key: "greeting", Value: &v}}}).Do())
	if _, err := e.svc.Instances.SetMetadata(proj, zone, "web-1", &compute.Metadata{Fingerprint: got.Metadata.Fingerprint}).Do(); apiErr(t, err).Code != 412 {
		t.Errorf("stale metadata fingerprint: %v, want 412", err)
	}
	got2, _ := e.svc.Instances.Get(proj, zone, "web-1").Do()
	if got2.Labels["owner"] != "ops" || got2.LabelFingerprint == got.LabelFingerprint || got2.Metadata.Fingerprint == got.Metadata.Fingerprint {
		t.Errorf("after updates: labels %v, fingerprints %s -> %s, %s -> %s", got2.Labels, got.LabelFingerprint, got2.LabelFingerprint, got.Metadata.Fingerprint, got2.Metadata.Fingerprint)
	}

	// Stop, start, delete.
	e.ok(t)(e.svc.Instances.Stop(proj, zone, "web-1").Do())
	if got, _ := e.svc.Instances.Get(proj, zone, "web-1").Do(); got.Status != "TERMINATED" {
		t.Errorf("after stop: %s, want TERMINATED", got.Status)
	}
	e.ok(t)(e.svc.Instances.Start(proj, zone, "web-1").Do())
	if got, _ := e.svc.Instances.Get(proj, zone, "web-1").Do(); got.Status != "RUNNING" {
		t.Errorf("after start: %s, want RUNNING", got.Status)
	}
	e.ok(t)(e.svc.Instances.Delete(proj, zone, "web-1").Do())
	_, err = e.svc.Instances.Get(proj, zone, "web-1").Do()
	if ge := apiErr(t, err); ge.Code != 404 || ge.Errors[0].Reason != "notFound" {
		t.Errorf("after delete: %v, want 404 notFound", err)
	}
}

func TestInvalidRequests(t *testing.T) {
	e := start(t, emulator.Options{})
	for _, tc := range []struct {
		name   string
		modify func(*compute.Instance)
		field  string
	}{
		{"bad name", func(i *compute.Instance) { i.Name = "Web_1" }, "resource.name"},
		{"unknown machine type", func(i *compute.Instance) { i.MachineType = "zones/us-central1-a/machineTypes/n9-giant" }, "resource.machineType"},
		{"machine type of another zone", func(i *compute.Instance) { i.MachineType = "zones/us-east1-b/machineTypes/e2-micro" }, "resource.machineType"},
		{"unknown image", func(i *compute.Instance) {
			i.Disks[0].InitializeParams.SourceImage = "projects/cos-cloud/global/images/family/cos-ancient"
		}, "sourceImage"},
		{"no disks", func(i *compute.Instance) { i.Disks = nil }, "resource.disks"},
		{"bad label", func(i *compute.Instance) { i.Labels = map[string]string{"Owner": "x"} }, "resource.labels"},
		{"max run duration without action", func(i *compute.Instance) {
			i.Scheduling = &compute.Scheduling{MaxRunDuration: &compute.Duration{Seconds: 3600}}
		}, "instanceTerminationAction"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := vm("ok-name")
			tc.modify(in)
			_, err := e.svc.Instances.Insert(proj, zone, in).Do()
			ge := apiErr(t, err)
			if ge.Code != 400 || !strings.Contains(ge.Message, tc.field) {
				t.Errorf("got %d %q, want 400 naming %s", ge.Code, ge.Message, tc.field)
			}
		})
	}
}

func TestRequestIDMakesInsertIdempotent(t *testing.T) {
	e := start(t, emulator.Options{})
	const id = "6a1c2e2e-7f6b-4d5e-9a43-1f0c5d8b7e21"
	op1, err := e.svc.Instances.Insert(proj, zone, vm("once")).RequestId(id).Do()
	if err != nil {
		t.Fatal(err)
	}
	op2, err := e.svc.Instances.Insert(proj, zone, vm("once")).RequestId(id).Do()
	if err != nil {
		t.Fatalf("retry with the same requestId: %v", err)
	}
	if op1.Name != op2.Name {
		t.Errorf("retry answered operation %s, want the first one, %s", op2.Name, op1.Name)
	}
	e.wait(t, op2)
	list, _ := e.svc.Instances.List(proj, zone).Do()
	if len(list.Items) != 1 {
		t.Errorf("%d instances, want 1", len(list.Items))
	}
	if _, err := e.svc.Instances.Insert(proj, zone, vm("twice")).RequestId("not-a-uuid").Do(); apiErr(t, err).Code != 400 {
		t.Errorf("bad requestId: %v, want 400", err)
	}
}

func TestListPagingAndFilters(t *testing.T) {
	e := start(t, emulator.Options{})
	for _, team := range []string{"a", "b"} {
		props := &compute.InstanceProperties{
			MachineType:       "e2-micro",
			Labels:            map[string]string{"team": team},
			Disks:             []*compute.AttachedDisk{{Boot: true, InitializeParams: &compute.AttachedDiskInitializeParams{SourceImage: "projects/debian-cloud/global/images/family/debian-12"}}},
			NetworkInterfaces: []*compute.NetworkInterface{{}},
		}
		e.ok(t)(e.svc.Instances.BulkInsert(proj, zone, &compute.BulkInsertInstanceResource{Count: 12, NamePattern: "team-" + team + "-###", InstanceProperties: props}).Do())
	}
	e.ok(t)(e.svc.Instances.Insert(proj, zone, vm("loner")).Do())
	e.ok(t)(e.svc.Instances.Stop(proj, zone, "loner").Do())

	// Paging: 25 instances in pages of 10.
	var seen []string
	token := ""
	pages := 0
	for {
		call := e.svc.Instances.List(proj, zone).MaxResults(10)
		if token != "" {
			call = call.PageToken(token)
		}
		l, err := call.Do()
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, in := range l.Items {
			seen = append(seen, in.Name)
		}
		if token = l.NextPageToken; token == "" {
			break
		}
	}
	if pages != 3 || len(seen) != 25 || !slices.IsSorted(seen) || len(slices.Compact(slices.Clone(seen))) != 25 {
		t.Errorf("%d pages, %d names (sorted %v): %v", pages, len(seen), slices.IsSorted(seen), seen)
	}

	for _, tc := range []struct {
		filter string
		want   int
	}{
		{`labels.team = "a"`, 12},
		{`labels.team = a AND status = RUNNING`, 12},
		{`(labels.team = "a") OR (labels.team = "b")`, 24},
		{`(labels.team = a) (name = "team-a-001")`, 1},
		{`labels.team != "a"`, 13},
		{`labels.team:*`, 24},
		{`status = TERMINATED`, 1},
		{`name eq 'team-b-00[1-5]'`, 5},
		{`name ne team-.*`, 1},
		{`(name eq team-a-.*) (labels.team eq b)`, 0},
		{`NOT labels.team:*`, 1},
		{`name : "lone"`, 1},
		{`scheduling.automaticRestart = true`, 25},
	} {
		l, err := e.svc.Instances.List(proj, zone).Filter(tc.filter).Do()
		if err != nil {
			t.Errorf("filter %s: %v", tc.filter, err)
			continue
		}
		if len(l.Items) != tc.want {
			t.Errorf("filter %s: %d instances, want %d", tc.filter, len(l.Items), tc.want)
		}
	}
	for _, bad := range []string{`name = `, `(name = a`, `name eq '('`} {
		if _, err := e.svc.Instances.List(proj, zone).Filter(bad).Do(); apiErr(t, err).Code != 400 {
			t.Errorf("filter %q: %v, want 400", bad, err)
		}
	}
	if _, err := e.svc.Instances.List(proj, zone).MaxResults(501).Do(); apiErr(t, err).Code != 400 {
		t.Errorf("maxResults 501: %v, want 400", err)
	}

	agg, err := e.svc.Instances.AggregatedList(proj).Filter(`labels.team = "b"`).Do()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(agg.Items["zones/"+zone].Instances); n != 12 {
		t.Errorf("aggregatedList: %d instances in %s, want 12", n, zone)
	}
	if w := agg.Items["zones/us-east1-b"].Warning; w == nil || w.Code != "NO_RESULTS_ON_PAGE" {
		t.Errorf("aggregatedList: empty zone has warning %+v, want NO_RESULTS_ON_PAGE", w)
	}
}

func TestBulkInsertAndQuota(t *testing.T) {
	e := start(t, emulator.Options{})
	if err := e.emu.SetQuota(proj, "us-central1", "INSTANCES", 5); err != nil {
		t.Fatal(err)
	}
	props := &compute.InstanceProperties{
		MachineType:       "e2-micro",
		Disks:             []*compute.AttachedDisk{{Boot: true, InitializeParams: &compute.AttachedDiskInitializeParams{SourceImage: "projects/cos-cloud/global/images/family/cos-stable"}}},
		NetworkInterfaces: []*compute.NetworkInterface{{}},
	}
	// minCount above what the quota allows: nothing is created.
	op, err := e.svc.Instances.BulkInsert(proj, zone, &compute.BulkInsertInstanceResource{Count: 8, MinCount: 6, NamePattern: "w-##", InstanceProperties: props}).Do()
	if err != nil {
		t.Fatal(err)
	}
	op = e.wait(t, op)
	if op.Error == nil || op.Error.Errors[0].Code != "QUOTA_EXCEEDED" || op.HttpErrorStatusCode != 403 {
		t.Fatalf("bulkInsert above quota: error %+v, http %d; want QUOTA_EXCEEDED, 403", op.Error, op.HttpErrorStatusCode)
	}
	if l, _ := e.svc.Instances.List(proj, zone).Do(); len(l.Items) != 0 {
		t.Fatalf("a failed bulkInsert left %d instances", len(l.Items))
	}
	// minCount within quota: as many as fit.
	op = e.ok(t)(e.svc.Instances.BulkInsert(proj, zone, &compute.BulkInsertInstanceResource{
		Count: 8, MinCount: 3, NamePattern: "w-##", InstanceProperties: props,
		PerInstanceProperties: map[string]compute.BulkInsertInstanceResourcePerInstanceProperties{"special": {}},
	}).Do())
	st := op.InstancesBulkInsertOperationMetadata.PerLocationStatus["zones/"+zone]
	if st.CreatedVmCount != 5 || st.FailedToCreateVmCount != 3 {
		t.Errorf("bulk status %+v, want 5 created and 3 failed", st)
	}
	l, _ := e.svc.Instances.List(proj, zone).Do()
	var names []string
	for _, in := range l.Items {
		names = append(names, in.Name)
	}
	if want := []string{"special", "w-01", "w-02", "w-03", "w-04"}; !slices.Equal(names, want) {
		t.Errorf("instances %v, want %v", names, want)
	}
	// Usage shows in the region's quotas.
	r, _ := e.svc.Regions.Get(proj, "us-central1").Do()
	for _, q := range r.Quotas {
		if q.Metric == "INSTANCES" && (q.Usage != 5 || q.Limit != 5) {
			t.Errorf("INSTANCES quota %g/%g, want 5/5", q.Usage, q.Limit)
		}
		if q.Metric == "CPUS" && q.Usage != 10 {
			t.Errorf("CPUS usage %g, want 10 (5 e2-micro)", q.Usage)
		}
	}
}

func TestStockoutAndCPUQuota(t *testing.T) {
	e := start(t, emulator.Options{})
	if err := e.emu.AddStockout(emulator.Stockout{Zone: zone, MachineType: "e2-standard-2"}); err != nil {
		t.Fatal(err)
	}
	op, err := e.svc.Instances.Insert(proj, zone, vm("scarce")).Do()
	if err != nil {
		t.Fatal(err)
	}
	op = e.wait(t, op)
	if op.Error == nil || op.Error.Errors[0].Code != "ZONE_RESOURCE_POOL_EXHAUSTED" || op.HttpErrorStatusCode != 503 {
		t.Errorf("stockout: %+v, http %d", op.Error, op.HttpErrorStatusCode)
	}
	// Another machine type in the zone still fits.
	other := vm("fits")
	other.MachineType = "zones/" + zone + "/machineTypes/e2-micro"
	e.ok(t)(e.svc.Instances.Insert(proj, zone, other).Do())

	e.emu.SetQuota(proj, "us-east1", "CPUS", 3)
	big := vm("big")
	big.MachineType = "zones/us-east1-b/machineTypes/e2-standard-4"
	op, err = e.svc.Instances.Insert(proj, "us-east1-b", big).Do()
	if err != nil {
		t.Fatal(err)
	}
	op = e.wait(t, op)
	if op.Error == nil || op.Error.Errors[0].Code != "QUOTA_EXCEEDED" || !strings.Contains(op.Error.Errors[0].Message, "CPUS") {
		t.Errorf("CPU quota: %+v", op.Error)
	}
	if _, err := e.svc.Instances.Get(proj, "us-east1-b", "big").Do(); apiErr(t, err).Code != 404 {
		t.Errorf("instance refused for quota exists: %v", err)
	}
}

func TestFaults(t *testing.T) {
	e := start(t, emulator.Options{})
	// Rate limit as GCE answers it.
	if err := e.emu.AddFault(emulator.Fault{Method: "compute.instances.list", ErrorCode: 403, Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Instances.List(proj, zone).Do()
	ge := apiErr(t, err)
	if ge.Code != 403 || ge.Errors[0].Reason != "rateLimitExceeded" {
		t.Errorf("rate limit: %v", err)
	}
	if _, err := e.svc.Instances.List(proj, zone).Do(); err != nil {
		t.Errorf("a count-limited fault fired again: %v", err)
	}
	// Server errors on the next two calls only, and only for inserts.
	e.emu.AddFault(emulator.Fault{Method: "compute.instances.*", Zone: zone, ErrorCode: 503, Count: 2})
	for i := range 2 {
		if _, err := e.svc.Instances.Insert(proj, zone, vm("flaky")).Do(); apiErr(t, err).Code != 503 {
			t.Errorf("call %d: %v, want 503", i, err)
		}
	}
	e.ok(t)(e.svc.Instances.Insert(proj, zone, vm("flaky")).Do())

	// A rate of one call a second with burst one: the second call at once fails.
	e.emu.AddFault(emulator.Fault{Method: "compute.zones.get", RateLimit: 1, RateLimitCode: 429})
	e.svc.Zones.Get(proj, zone).Do()
	_, err = e.svc.Zones.Get(proj, zone).Do()
	if ge := apiErr(t, err); ge.Code != 429 || ge.Errors[0].Reason != "userRateLimitExceeded" {
		t.Errorf("429 rate limit: %v", err)
	}

	// The admin API sets the same knobs over HTTP and explains bad input.
	resp, err := http.Post(e.url+"/emulator/v1/faults", "application/json", strings.NewReader(`{"method":"compute.regions.get","errorCode":418}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "errorCode 418") {
		t.Errorf("bad fault: %d %s", resp.StatusCode, body)
	}
	resp, _ = http.Post(e.url+"/emulator/v1/faults", "application/json", strings.NewReader(`{"method":"compute.regions.get","errorCode":500}`))
	resp.Body.Close()
	if _, err := e.svc.Regions.Get(proj, "us-east1").Do(); apiErr(t, err).Code != 500 {
		t.Errorf("fault from the admin API: %v, want 500", err)
	}
	req, _ := http.NewRequest("DELETE", e.url+"/emulator/v1/faults", nil)
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if _, err := e.svc.Regions.Get(proj, "us-east1").Do(); err != nil {
		t.Errorf("after clearing faults: %v", err)
	}
	// Latency is added to every matching call.
	e.emu.AddFault(emulator.Fault{Method: "compute.zones.list", Latency: 50 * time.Millisecond})
	t0 := time.Now()
	e.svc.Zones.List(proj).Do()
	if d := time.Since(t0); d < 50*time.Millisecond {
		t.Errorf("call with 50ms latency took %v", d)
	}
}

// TestOperationFaults: a mutation failed by a fault is accepted, and its
// operation ends DONE with the error, having changed nothing, as GCE's
// asynchronous failures do; a retry under the same requestId gets the
// same operation; reads go on.
func TestOperationFaults(t *testing.T) {
	e := start(t, emulator.Options{})
	e.ok(t)(e.svc.Instances.Insert(proj, zone, vm("m1")).Do())
	if err := e.emu.AddFault(emulator.Fault{Method: "compute.instances.*", OperationError: "RESOURCE_NOT_READY", Count: 1}); err != nil {
		t.Fatal(err)
	}
	in, err := e.svc.Instances.Get(proj, zone, "m1").Do()
	if err != nil {
		t.Fatalf("a read under an operation fault: %v", err)
	}
	v := "v"
	md := &compute.Metadata{Fingerprint: in.Metadata.Fingerprint, Items: []*compute.MetadataItems{{Key: "k", Value: &v}}}
	const id = "6f1c2a3e-1b2c-4d5e-8f90-0a1b2c3d4e5f"
	op, err := e.svc.Instances.SetMetadata(proj, zone, "m1", md).RequestId(id).Do()
	if err != nil {
		t.Fatalf("setMetadata under an operation fault answered %v, want an operation", err)
	}
	op = e.wait(t, op)
	if op.Error == nil || op.Error.Errors[0].Code != "RESOURCE_NOT_READY" || op.HttpErrorStatusCode != 500 ||
		op.OperationType != "setMetadata" || !strings.HasSuffix(op.TargetLink, "/zones/"+zone+"/instances/m1") {
		t.Errorf("failed operation: %+v", op)
	}
	again, err := e.svc.Instances.SetMetadata(proj, zone, "m1", md).RequestId(id).Do()
	if err != nil || again.Name != op.Name {
		t.Errorf("retry under the same requestId: %v, %v; want operation %s", again, err, op.Name)
	}
	if got, _ := e.svc.Instances.Get(proj, zone, "m1").Do(); got.Metadata.Fingerprint != in.Metadata.Fingerprint || len(got.Metadata.Items) != 0 {
		t.Errorf("a failed setMetadata changed the metadata: %+v", got.Metadata)
	}
	e.ok(t)(e.svc.Instances.SetMetadata(proj, zone, "m1", md).Do())

	// A fault on every method fails mutations only: waiting on an
	// operation and listing are reads, even when they are POSTs.
	if err := e.emu.AddFault(emulator.Fault{OperationError: "INTERNAL_ERROR"}); err != nil {
		t.Fatal(err)
	}
	op, err = e.svc.Instances.Delete(proj, zone, "m1").Do()
	if err != nil {
		t.Fatal(err)
	}
	if op = e.wait(t, op); op.Error == nil || op.Error.Errors[0].Code != "INTERNAL_ERROR" || op.OperationType != "delete" {
		t.Errorf("delete under an operation fault: %+v", op)
	}
	if _, err := e.svc.Instances.Get(proj, zone, "m1").Do(); err != nil {
		t.Errorf("the instance whose deletion failed: %v", err)
	}
	e.emu.ClearFaults()
	if err := e.emu.AddFault(emulator.Fault{OperationError: "bad code"}); err == nil || !strings.Contains(err.Error(), "INTERNAL_ERROR") {
		t.Errorf("a fault with a malformed operationError: %v", err)
	}
}

func TestFirewallsAndOperations(t *testing.T) {
	e := start(t, emulator.Options{})
	fw := &compute.Firewall{Name: "allow-workers", Allowed: []*compute.FirewallAllowed{{IPProtocol: "tcp", Ports: []string{"8443"}}}, TargetTags: []string{"run-1"}, SourceRanges: []string{"10.0.0.1/32"}}
	op := e.ok(t)(e.svc.Firewalls.Insert(proj, fw).Do())
	if op.Zone != "" || !strings.Contains(op.SelfLink, "/global/operations/") {
		t.Errorf("firewall insert is not a global operation: %+v", op)
	}
	if _, err := e.svc.Firewalls.Insert(proj, fw).Do(); apiErr(t, err).Code != 409 {
		t.Errorf("duplicate firewall: %v", err)
	}
	got, err := e.svc.Firewalls.Get(proj, "allow-workers").Do()
	if err != nil || got.Direction != "INGRESS" || got.Priority != 1000 || got.Allowed[0].Ports[0] != "8443" {
		t.Errorf("firewall %+v, %v", got, err)
	}
	l, _ := e.svc.Firewalls.List(proj).Do()
	if len(l.Items) != 1 {
		t.Errorf("%d firewalls", len(l.Items))
	}
	e.ok(t)(e.svc.Firewalls.Delete(proj, "allow-workers").Do())
	if _, err := e.svc.Firewalls.Get(proj, "allow-workers").Do(); apiErr(t, err).Code != 404 {
		t.Errorf("deleted firewall: %v", err)
	}

	ops, err := e.svc.GlobalOperations.List(proj).Do()
	if err != nil || len(ops.Items) != 2 {
		t.Fatalf("global operations: %v, %v", ops, err)
	}
	got1, err := e.svc.GlobalOperations.Get(proj, ops.Items[0].Name).Do()
	if err != nil || got1.Status != "DONE" {
		t.Errorf("get operation: %+v %v", got1, err)
	}
	if err := e.svc.GlobalOperations.Delete(proj, ops.Items[0].Name).Do(); err != nil {
		t.Errorf("delete operation: %v", err)
	}
	if _, err := e.svc.GlobalOperations.Get(proj, ops.Items[0].Name).Do(); apiErr(t, err).Code != 404 {
		t.Errorf("deleted operation: %v", err)
	}

	// wait answers when the operation is done, not before.
	e.emu.SetLatency(emulator.Latency{Running: 100 * time.Millisecond})
	op, err = e.svc.Instances.Insert(proj, zone, vm("slow")).Do()
	if err != nil {
		t.Fatal(err)
	}
	if op.Status == "DONE" {
		t.Errorf("insert answered a DONE operation despite latency")
	}
	waited, err := e.svc.ZoneOperations.Wait(proj, zone, op.Name).Do()
	if err != nil || waited.Status != "DONE" || waited.EndTime == "" || waited.Progress != 100 {
		t.Errorf("wait: %+v %v", waited, err)
	}
	zl, _ := e.svc.ZoneOperations.List(proj, zone).Filter(`operationType = insert`).Do()
	if len(zl.Items) != 1 {
		t.Errorf("zone operations of type insert: %d", len(zl.Items))
	}
}

func TestCloudResourceManager(t *testing.T) {
	e := start(t, emulator.Options{})
	crm, err := cloudresourcemanager.NewService(context.Background(), option.WithEndpoint(e.url+"/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	p, err := crm.Projects.Get(proj).Do()
	if err != nil {
		t.Fatal(err)
	}
	if p.ProjectNumber == 0 || p.ProjectId != proj || p.LifecycleState != "ACTIVE" {
		t.Errorf("project %+v", p)
	}
	e.emu.DenyPermissions(proj, "iam.serviceAccounts.actAs")
	resp, err := crm.Projects.TestIamPermissions(proj, &cloudresourcemanager.TestIamPermissionsRequest{
		Permissions: []string{"compute.instances.create", "iam.serviceAccounts.actAs"},
	}).Do()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.Permissions, []string{"compute.instances.create"}) {
		t.Errorf("granted %v, want only compute.instances.create", resp.Permissions)
	}
}

// TestOldOperationsAreForgotten: DONE operations older than the retention
// leave the lists (and their requestIds), so that a long-running emulator
// does not grow with every call; recent ones stay.
func TestOldOperationsAreForgotten(t *testing.T) {
	var age atomic.Int64 // how far the emulator's clock is ahead
	now := func() time.Time { return time.Now().Add(time.Duration(age.Load())) }
	e := start(t, emulator.Options{OperationRetention: time.Hour, Now: now})
	insert := func(i int) {
		t.Helper()
		fw := &compute.Firewall{Name: fmt.Sprintf("fw-%d", i), Allowed: []*compute.FirewallAllowed{{IPProtocol: "tcp"}}, SourceRanges: []string{"10.0.0.1/32"}}
		e.ok(t)(e.svc.Firewalls.Insert(proj, fw).Do())
	}
	for i := range 200 {
		insert(i)
	}
	before, err := e.svc.GlobalOperations.List(proj).MaxResults(500).Do()
	if err != nil || len(before.Items) != 200 {
		t.Fatalf("operations before pruning: %d, %v", len(before.Items), err)
	}
	age.Store(int64(2 * time.Hour))
	for i := 200; i < 300; i++ {
		insert(i)
	}
	after, err := e.svc.GlobalOperations.List(proj).MaxResults(500).Do()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(after.Items); n >= 200 || n == 0 {
		t.Errorf("%d operations after 300 calls with the first 200 past retention; want only recent ones", n)
	}
	if _, err := e.svc.GlobalOperations.Get(proj, before.Items[0].Name).Do(); apiErr(t, err).Code != 404 {
		t.Errorf("an operation past retention: %v", err)
	}
}

// TestNotFoundNamesTheResource holds every collection's get and delete to
// GCE's notFound error, which names the resource by its path.
func TestNotFoundNamesTheResource(t *testing.T) {
	e := start(t, emulator.Options{})
	for _, tc := range []struct {
		path string
		call func() error
	}{
		{"projects/" + proj + "/zones/" + zone + "/instances/nope", func() error { _, err := e.svc.Instances.Get(proj, zone, "nope").Do(); return err }},
		{"projects/" + proj + "/zones/" + zone + "/instances/nope", func() error { _, err := e.svc.Instances.Delete(proj, zone, "nope").Do(); return err }},
		{"projects/" + proj + "/zones/" + zone + "/instanceGroupManagers/nope", func() error {
			_, err := e.svc.InstanceGroupManagers.Get(proj, zone, "nope").Do()
			return err
		}},
		{"projects/" + proj + "/global/instanceTemplates/nope", func() error { _, err := e.svc.InstanceTemplates.Get(proj, "nope").Do(); return err }},
		{"projects/" + proj + "/global/instanceTemplates/nope", func() error { _, err := e.svc.InstanceTemplates.Delete(proj, "nope").Do(); return err }},
		{"projects/" + proj + "/global/firewalls/nope", func() error { _, err := e.svc.Firewalls.Get(proj, "nope").Do(); return err }},
		{"projects/" + proj + "/global/firewalls/nope", func() error { _, err := e.svc.Firewalls.Delete(proj, "nope").Do(); return err }},
		{"projects/" + proj + "/zones/" + zone + "/operations/nope", func() error { _, err := e.svc.ZoneOperations.Get(proj, zone, "nope").Do(); return err }},
		{"projects/" + proj + "/zones/" + zone + "/operations/nope", func() error { return e.svc.ZoneOperations.Delete(proj, zone, "nope").Do() }},
		{"projects/" + proj + "/regions/us-central1/operations/nope", func() error {
			_, err := e.svc.RegionOperations.Get(proj, "us-central1", "nope").Do()
			return err
		}},
		{"projects/" + proj + "/global/operations/nope", func() error { _, err := e.svc.GlobalOperations.Get(proj, "nope").Do(); return err }},
		{"projects/" + proj + "/global/operations/nope", func() error { return e.svc.GlobalOperations.Delete(proj, "nope").Do() }},
	} {
		ge := apiErr(t, tc.call())
		want := "The resource '" + tc.path + "' was not found"
		if ge.Code != 404 || len(ge.Errors) != 1 || ge.Errors[0].Reason != "notFound" || ge.Message != want {
			t.Errorf("%s: %d %q %v, want 404 notFound %q", tc.path, ge.Code, ge.Message, ge.Errors, want)
		}
	}
}
