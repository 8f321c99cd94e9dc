package emulator_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"
	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/googleapi"

	"github.com/gcefleet/gcefleet/emulator"
)

// tickingClock is an emulator clock that moves a second forward at every
// reading, so that each resource made has its own creationTimestamp.
func tickingClock() func() time.Time {
	var n atomic.Int64
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	return func() time.Time { return base.Add(time.Duration(n.Add(1)) * time.Second) }
}

// TestListOrderBy: lists honour orderBy "name" and "creationTimestamp desc"
// (newest first, across pages), refuse any other order, and refuse a page
// token made for another order, with GCE's 400 invalid error.
func TestListOrderBy(t *testing.T) {
	e := start(t, emulator.Options{Now: tickingClock()})
	made := []string{"fw-b", "fw-d", "fw-a", "fw-c", "fw-e"} // in the order they are made
	for _, name := range made {
		fw := &compute.Firewall{Name: name, Allowed: []*compute.FirewallAllowed{{IPProtocol: "tcp"}}, SourceRanges: []string{"10.0.0.1/32"}}
		e.ok(t)(e.svc.Firewalls.Insert(proj, fw).Do())
	}
	newest := slices.Clone(made)
	slices.Reverse(newest)

	names := func(order string, pageSize int64) []string {
		t.Helper()
		var out []string
		token := ""
		for range 10 {
			l, err := e.svc.Firewalls.List(proj).OrderBy(order).MaxResults(pageSize).PageToken(token).Do()
			if err != nil {
				t.Fatalf("orderBy %q: %v", order, err)
			}
			for _, fw := range l.Items {
				out = append(out, fw.Name)
			}
			if token = l.NextPageToken; token == "" {
				return out
			}
		}
		t.Fatalf("orderBy %q: more than 10 pages", order)
		return nil
	}
	if got := names("creationTimestamp desc", 2); !slices.Equal(got, newest) {
		t.Errorf("orderBy creationTimestamp desc, pages of 2: %v, want %v", got, newest)
	}
	if got, want := names("name", 2), []string{"fw-a", "fw-b", "fw-c", "fw-d", "fw-e"}; !slices.Equal(got, want) {
		t.Errorf("orderBy name: %v, want %v", got, want)
	}

	// Operations too: the newest first.
	ops, err := e.svc.GlobalOperations.List(proj).OrderBy("creationTimestamp desc").Do()
	if err != nil {
		t.Fatal(err)
	}
	if len(ops.Items) != len(made) || !strings.HasSuffix(ops.Items[0].TargetLink, "/fw-e") || !strings.HasSuffix(ops.Items[len(made)-1].TargetLink, "/fw-b") {
		var got []string
		for _, op := range ops.Items {
			got = append(got, lastSeg(op.TargetLink))
		}
		t.Errorf("operations newest first target %v, want %v", got, newest)
	}

	for _, bad := range []string{"creationTimestamp", "name desc", "zone", "creationTimestamp desc, name"} {
		_, err := e.svc.Firewalls.List(proj).OrderBy(bad).Do()
		ge := apiErr(t, err)
		if ge.Code != 400 || len(ge.Errors) != 1 || ge.Errors[0].Reason != "invalid" || !strings.Contains(ge.Message, "Invalid value for field 'orderBy': '"+bad+"'") {
			t.Errorf("orderBy %q: %d %+v %q, want 400 invalid naming field 'orderBy'", bad, ge.Code, ge.Errors, ge.Message)
		}
	}
	first, err := e.svc.Firewalls.List(proj).MaxResults(2).Do()
	if err != nil {
		t.Fatal(err)
	}
	ops, err = e.svc.GlobalOperations.List(proj).MaxResults(2).Do()
	if err != nil || ops.NextPageToken == "" {
		t.Fatalf("operations in pages of 2: %v, token %q", err, ops.NextPageToken)
	}
	for _, bad := range []struct{ why, order, token string }{
		{"a token of the name order used with another", "creationTimestamp desc", first.NextPageToken},
		{"not a token", "", "nonsense"},
		{"a token of another list", "", ops.NextPageToken},
		{"base64 of no cursor", "", "YWZ0ZXI6Znct"},
	} {
		_, err := e.svc.Firewalls.List(proj).OrderBy(bad.order).PageToken(bad.token).Do()
		if ge := apiErr(t, err); ge.Code != 400 || !strings.Contains(ge.Message, "'pageToken'") {
			t.Errorf("%s: %d %q, want 400 naming pageToken", bad.why, ge.Code, ge.Message)
		}
	}
	for _, bad := range []string{"-1", "501", "ten"} {
		_, err := e.svc.Firewalls.List(proj).Do(googleapi.QueryParameter("maxResults", bad))
		if ge := apiErr(t, err); ge.Code != 400 || !strings.Contains(ge.Message, "'maxResults'") {
			t.Errorf("maxResults %s: %d %q, want 400 naming maxResults", bad, ge.Code, ge.Message)
		}
	}
}

// TestListOrderByCloudClientLibrary: the Cloud Client Library's orderBy
// and iterators see the same orders, on a zonal list and an aggregated one.
func TestListOrderByCloudClientLibrary(t *testing.T) {
	e := start(t, emulator.Options{Now: tickingClock()})
	c := newCCL(t, e)
	ctx := context.Background()
	made := []string{"t-3", "t-1", "t-2"}
	for _, name := range made {
		tmpl := &computepb.InstanceTemplate{Name: &name, Properties: &computepb.InstanceProperties{
			MachineType: new("e2-micro"),
			Disks: []*computepb.AttachedDisk{{Boot: new(true), InitializeParams: &computepb.AttachedDiskInitializeParams{
				SourceImage: new("projects/cos-cloud/global/images/family/cos-stable")}}},
			NetworkInterfaces: []*computepb.NetworkInterface{{}},
		}}
		op, err := c.templates.Insert(ctx, &computepb.InsertInstanceTemplateRequest{Project: proj, InstanceTemplateResource: tmpl})
		done(t, op, err)
	}
	var got []string
	for _, tmpl := range all(t, c.templates.List(ctx, &computepb.ListInstanceTemplatesRequest{Project: proj, OrderBy: new("creationTimestamp desc"), MaxResults: new(uint32(1))}).Next) {
		got = append(got, tmpl.GetName())
	}
	if want := []string{"t-2", "t-1", "t-3"}; !slices.Equal(got, want) {
		t.Errorf("instanceTemplates newest first: %v, want %v", got, want)
	}
	_, err := c.templates.List(ctx, &computepb.ListInstanceTemplatesRequest{Project: proj, OrderBy: new("labels.team")}).Next()
	if ge := apiErr(t, err); ge.Code != 400 || !strings.Contains(ge.Message, "'orderBy'") {
		t.Errorf("orderBy labels.team: %d %q, want 400 naming orderBy", ge.Code, ge.Message)
	}

	// bulkInsert numbers after the highest existing match here too.
	e.ok(t)(e.svc.Instances.Insert(proj, zone, vm("n-07")).Do())
	op, err := c.instances.BulkInsert(ctx, &computepb.BulkInsertInstanceRequest{Project: proj, Zone: zone,
		BulkInsertInstanceResourceResource: &computepb.BulkInsertInstanceResource{
			Count: new(int64(1)), NamePattern: new("n-##"),
			InstanceProperties: &computepb.InstanceProperties{
				MachineType: new("e2-small"),
				Disks: []*computepb.AttachedDisk{{Boot: new(true), InitializeParams: &computepb.AttachedDiskInitializeParams{
					SourceImage: new("projects/cos-cloud/global/images/family/cos-stable")}}},
				NetworkInterfaces: []*computepb.NetworkInterface{{}},
			},
		}})
	done(t, op, err)
	if got := names(all(t, c.instances.List(ctx, &computepb.ListInstancesRequest{Project: proj, Zone: zone}).Next)); !slices.Equal(got, []string{"n-07", "n-08"}) {
		t.Errorf("bulkInsert n-## of 1 after n-07: %v, want [n-07 n-08]", got)
	}

	// machineTypes.aggregatedList: every zone's catalogue, paged.
	perZone := map[string]int{}
	it := c.types.AggregatedList(ctx, &computepb.AggregatedListMachineTypesRequest{Project: proj, MaxResults: new(uint32(100)), Filter: new(`name eq "e2-.*"`)})
	for _, pair := range all(t, it.Next) {
		for _, mt := range pair.Value.GetMachineTypes() {
			if !strings.HasPrefix(mt.GetName(), "e2-") || "zones/"+mt.GetZone() != pair.Key {
				t.Errorf("machine type %s of zone %s under %s", mt.GetName(), mt.GetZone(), pair.Key)
			}
			perZone[pair.Key]++
		}
	}
	if len(perZone) < 13 || perZone["zones/"+zone] < 5 {
		t.Errorf("machineTypes.aggregatedList: e2 types per zone %v, want every zone with at least 5", perZone)
	}
}

// TestMachineTypesAggregatedList: the discovery client's aggregatedList
// answers every zone, and the machine types it names are the zone's.
func TestMachineTypesAggregatedList(t *testing.T) {
	e := start(t, emulator.Options{})
	var pages, total int
	err := e.svc.MachineTypes.AggregatedList(proj).MaxResults(500).Pages(context.Background(), func(l *compute.MachineTypeAggregatedList) error {
		pages++
		for scope, sl := range l.Items {
			for _, mt := range sl.MachineTypes {
				if "zones/"+mt.Zone != scope || mt.Kind != "compute#machineType" {
					return fmt.Errorf("%s (%s) of zone %s under %s", mt.Name, mt.Kind, mt.Zone, scope)
				}
				total++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	one, err := e.svc.MachineTypes.List(proj, zone).Do()
	if err != nil {
		t.Fatal(err)
	}
	zones, err := e.svc.Zones.List(proj).Do()
	if err != nil {
		t.Fatal(err)
	}
	if want := len(one.Items) * len(zones.Items); total != want || pages < 2 {
		t.Errorf("aggregatedList: %d machine types in %d pages, want %d (every zone's) in more than one page of 500", total, pages, want)
	}
}

// TestBulkInsertNumbersAfterHighest: a namePattern numbers new instances
// after the highest existing number that matches it, as GCE documents; it
// does not fill gaps, and names that match only in part do not count.
func TestBulkInsertNumbersAfterHighest(t *testing.T) {
	e := start(t, emulator.Options{})
	for _, name := range []string{"w-002", "w-050", "w-0999", "x-900"} {
		e.ok(t)(e.svc.Instances.Insert(proj, zone, vm(name)).Do())
	}
	props := &compute.InstanceProperties{
		MachineType:       "e2-micro",
		Disks:             []*compute.AttachedDisk{{Boot: true, InitializeParams: &compute.AttachedDiskInitializeParams{SourceImage: "projects/cos-cloud/global/images/family/cos-stable"}}},
		NetworkInterfaces: []*compute.NetworkInterface{{}},
	}
	e.ok(t)(e.svc.Instances.BulkInsert(proj, zone, &compute.BulkInsertInstanceResource{Count: 2, NamePattern: "w-###", InstanceProperties: props}).Do())
	l, err := e.svc.Instances.List(proj, zone).Filter(`name eq "w-.*"`).Do()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range l.Items {
		got = append(got, in.Name)
	}
	if want := []string{"w-002", "w-050", "w-051", "w-052", "w-0999"}; !slices.Equal(got, want) {
		t.Errorf("after bulkInsert w-### of 2: %v, want %v", got, want)
	}
	_, err = e.svc.Instances.BulkInsert(proj, zone, &compute.BulkInsertInstanceResource{Count: 1, NamePattern: "x-#", InstanceProperties: props}).Do()
	if err != nil {
		t.Fatalf("x-# with x-900 existing (a 3-digit name does not match one '#'): %v", err)
	}
	_, err = e.svc.Instances.BulkInsert(proj, zone, &compute.BulkInsertInstanceResource{Count: 100, NamePattern: "y-##", InstanceProperties: props}).Do()
	if ge := apiErr(t, err); ge.Code != 400 || !strings.Contains(ge.Message, "'resource.namePattern'") {
		t.Errorf("100 names from y-##: %d %q, want 400 naming resource.namePattern", ge.Code, ge.Message)
	}
}
