package backend_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// TestUnreadableMetadataFileIsAnError: a template's revision hashes what
// its metadata files say, so one that cannot be read is an error that
// names the file, not the revision of a template without it.
func TestUnreadableMetadataFileIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "startup.sh")
	tmpl := backend.Template{BaseName: "pool", Project: "my-project", MachineType: "e2-standard-2",
		MetadataFromFiles: map[string]string{"startup-script": path}}
	rev, err := tmpl.Revision("d-1")
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "startup-script") {
		t.Fatalf("revision of a template whose metadata file is missing: %q, %v; want an error naming %s", rev, err, path)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if rev, err := tmpl.Revision("d-1"); err != nil || !strings.HasPrefix(rev, "pool-") {
		t.Errorf("revision once the file is there: %q, %v", rev, err)
	}
}

// TestVanishedMetadataFileRollsNothingOut: a metadata file that vanishes
// under a running fleet stops every job that needs the revisions, with an
// error naming the file; nothing is created, drained, uncataloged or
// deleted meanwhile, and once the file is back the fleet is as it was.
func TestVanishedMetadataFileRollsNothingOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "startup.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	j, _ := jobs(t, poolTemplate+`    metadata_from_files: {startup-script: `+path+`}
managers:
  - {template_base_name: pool, zone: us-central1-a, minimum_size: 1, maximum_size: 1}
`)
	ctx := context.Background()
	api, _ := providerFor(t, j)
	for _, step := range []func(context.Context) error{j.CreateInstanceTemplates, j.CreateInstanceGroupManagers} {
		if err := step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rev := revision(t, j, j.Config().Templates[0])
	cataloged := func() []store.Machine {
		t.Helper()
		ms, err := api.Machines(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}
	testutil.WaitFor(t, "the group's instance to be cataloged", func() bool {
		if err := j.CatalogInstances(ctx); err != nil {
			t.Fatal(err)
		}
		return len(cataloged()) == 1
	})

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	jobsOf := map[string]func(context.Context) error{
		"create-instance-templates":      j.CreateInstanceTemplates,
		"create-instance-group-managers": j.CreateInstanceGroupManagers,
		"resize-instance-groups":         j.ResizeInstanceGroups,
		"catalog-instances":              j.CatalogInstances,
		"remove-cataloged-instances":     j.RemoveCatalogedInstances,
		"delete-instance-group-managers": j.DeleteInstanceGroupManagers,
		"delete-instance-templates":      j.DeleteInstanceTemplates,
		"audit-instances":                j.AuditInstances,
		"plan":                           func(ctx context.Context) error { _, err := j.Plan(ctx); return err },
	}
	for name, run := range jobsOf {
		if err := run(ctx); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s with the metadata file gone: %v; want an error naming %s", name, err, path)
		}
	}
	if err := j.DeleteInstancesPendingDeletion(ctx); err != nil {
		t.Errorf("delete-instances-pending-deletion, with nothing pending: %v", err)
	}
	if ms := cataloged(); len(ms) != 1 || ms[0].State != store.Available {
		t.Errorf("catalog with the metadata file gone: %+v; want the one idle machine kept", ms)
	}
	if tms := templateNames(t, j); len(tms) != 1 || tms[rev] == nil {
		t.Errorf("templates with the metadata file gone: %v; want only %s", keys(tms), rev)
	}
	g, err := j.Compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: "us-central1-a", InstanceGroupManager: rev})
	if err != nil || g.GetTargetSize() != 1 {
		t.Errorf("group %s with the metadata file gone: %v, %v; want it kept at size 1", rev, g, err)
	}
	if st := j.State(); len(st.Pending) != 0 || len(st.Groups) != 1 || len(st.Templates) != 1 {
		t.Errorf("state with the metadata file gone: %+v; want one template, one group, nothing pending", st)
	}

	if err := os.WriteFile(path, []byte("#!/bin/sh\necho hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, run := range jobsOf {
		if err := run(ctx); err != nil {
			t.Errorf("%s once the file is back: %v", name, err)
		}
	}
	if tms := templateNames(t, j); len(tms) != 1 || tms[rev] == nil {
		t.Errorf("templates once the file is back: %v; want only %s", keys(tms), rev)
	}
	if ms := cataloged(); len(ms) != 1 {
		t.Errorf("catalog once the file is back: %+v; want the one machine", ms)
	}
}

// TestStatusPageSaysWhyRevisionsAreUnknown: the status page names the
// metadata file that keeps the revisions from being computed.
func TestStatusPageSaysWhyRevisionsAreUnknown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "startup.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	j, _ := jobs(t, poolTemplate+`    metadata_from_files: {startup-script: `+path+`}
managers:
  - {template_base_name: pool, zone: us-central1-a, minimum_size: 1, maximum_size: 1}
`)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	api, _ := providerFor(t, j)
	ctx, cancel := context.WithCancel(context.Background())
	b := backend.Run(ctx, j.Config(), j.Compute, api, backend.Options{}, slog.New(slog.DiscardHandler))
	defer stopped(t, b)
	defer cancel()
	if page := string(b.StatusHTML()); !strings.Contains(page, "cannot be computed") || !strings.Contains(page, path) {
		t.Errorf("the status page does not say why the revisions are unknown:\n%s", page)
	}
}
