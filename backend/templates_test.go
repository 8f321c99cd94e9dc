package backend_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/internal/testutil"
)

func TestTemplatesAndManagersAreCreatedOnce(t *testing.T) {
	j, _ := jobs(t, good)
	ctx := context.Background()
	// Managers wait for their templates: run out of order first.
	if err := j.CreateInstanceGroupManagers(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second pass changes nothing
		if err := j.CreateInstanceTemplates(ctx); err != nil {
			t.Fatal(err)
		}
		if err := j.CreateInstanceGroupManagers(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tms := templateNames(t, j)
	linux := j.Config().Templates[0]
	tm, ok := tms[revision(t, j, linux)]
	if len(tms) != 2 || !ok {
		t.Fatalf("templates %v; want the two revisions", tms)
	}
	p := tm.GetProperties()
	if p.GetMachineType() != "e2-standard-8" || p.GetLabels()[backend.TemplateLabel] != "linux-8" || p.GetLabels()["team"] != "infra" ||
		p.GetDisks()[0].GetInitializeParams().GetDiskSizeGb() != 50 {
		t.Errorf("template properties %v", p)
	}
	wt := j.Config().Templates[1]
	workers := tms[revision(t, j, wt)].GetProperties()
	md := workers.GetMetadata().GetItems()
	if workers.GetScheduling().GetProvisioningModel() != "SPOT" || md[0].GetKey() != gcecompute.ContainerDeclarationKey ||
		md[0].GetValue() != gcecompute.ContainerDeclaration(wt.BaseName, wt.ContainerImage, gcecompute.RestartAlways) {
		t.Errorf("container template %v", workers)
	}
	for _, m := range j.Config().Managers {
		rev := ""
		for _, tt := range j.Config().Templates {
			if tt.BaseName == m.TemplateBaseName {
				rev = revision(t, j, tt)
			}
		}
		g, err := j.Compute.Groups.Get(ctx, &computepb.GetInstanceGroupManagerRequest{Project: "my-project", Zone: m.Zone, InstanceGroupManager: rev})
		if err != nil {
			t.Errorf("manager of %s in %s: %v", m.TemplateBaseName, m.Zone, err)
			continue
		}
		if g.GetTargetSize() != int32(m.MinimumSize) {
			t.Errorf("group %s in %s: target %d, want the minimum %d", rev, m.Zone, g.GetTargetSize(), m.MinimumSize)
		}
	}
}

// TestChangedTemplateIsANewRevision: the old revision stays (to be drained)
// and the new one is made beside it; a change in a metadata file counts.
func TestChangedTemplateIsANewRevision(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "startup.sh")
	testutil.WriteFile(t, file, []byte("echo one"))
	yaml := `templates:
  - base_name: web
    project: my-project
    dimensions: {os: linux}
    machine_type: e2-small
    image: projects/debian-cloud/global/images/family/debian-12
    metadata_from_files: {startup-script: ` + file + `}
`
	j, _ := jobs(t, yaml)
	ctx := context.Background()
	first := revision(t, j, j.Config().Templates[0])
	if err := j.CreateInstanceTemplates(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, file, []byte("echo two"))
	second := revision(t, j, j.Config().Templates[0])
	if first == second {
		t.Fatal("a changed metadata file did not change the revision")
	}
	if err := j.CreateInstanceTemplates(ctx); err != nil {
		t.Fatal(err)
	}
	tms := templateNames(t, j)
	if len(tms) != 2 || tms[first] == nil || tms[second] == nil {
		t.Errorf("templates %v; want both revisions", tms)
	}
	var script string
	for _, it := range tms[second].GetProperties().GetMetadata().GetItems() {
		if it.GetKey() == "startup-script" {
			script = it.GetValue()
		}
	}
	if script != "echo two" {
		t.Errorf("startup-script %q", script)
	}
}

func TestPlanSaysWhatWouldChange(t *testing.T) {
	j, _ := jobs(t, good)
	ctx := context.Background()
	changes, err := j.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, c := range changes {
		count[c.Action]++
	}
	if count["create-template"] != 2 || count["create-group"] != 3 || len(changes) != 5 {
		t.Errorf("plan on an empty project: %v", changes)
	}
	if err := j.CreateInstanceTemplates(ctx); err != nil {
		t.Fatal(err)
	}
	if err := j.CreateInstanceGroupManagers(ctx); err != nil {
		t.Fatal(err)
	}
	if p := plan(t, j); len(p) != 0 {
		t.Errorf("plan once GCE matches: %v", p)
	}
	// A changed template leaves its old revision to drain.
	cfg := j.Config()
	cfg.Templates[0].MachineType = "e2-standard-16"
	j.SetConfig(cfg)
	changes = plan(t, j)
	count = map[string]int{}
	for _, c := range changes {
		count[c.Action]++
	}
	if count["create-template"] != 1 || count["create-group"] != 2 || count["drain-revision"] != 1 || count["drain-group"] != 2 {
		t.Errorf("plan after a template change: %v", changes)
	}
	// A manager taken out of the configuration leaves its group to drain,
	// and its template, still configured, stays.
	workers := cfg.Managers[2]
	cfg.Managers = cfg.Managers[:2]
	j.SetConfig(cfg)
	changes = plan(t, j)
	var drained []string
	for _, c := range changes {
		if c.Action == "drain-group" && strings.Contains(c.Detail, "its manager was taken out of the configuration") {
			drained = append(drained, c.What)
		}
		if c.Action == "drain-revision" && strings.HasPrefix(c.What, "workers-") {
			t.Errorf("plan drains a configured template: %v", c)
		}
	}
	if len(drained) != 1 || !strings.HasPrefix(drained[0], "workers-") || !strings.HasSuffix(drained[0], " in "+workers.Zone) {
		t.Errorf("plan after a manager was removed drains %v:\n%v", drained, changes)
	}
}

// TestPlanSeesRemovedProjects: a template taken out of the configuration
// with its whole project is still shown draining, because the backend's
// state remembers the project.
func TestPlanSeesRemovedProjects(t *testing.T) {
	two := strings.Replace(good, "  - base_name: workers\n    project: my-project", "  - base_name: workers\n    project: other-project", 1)
	j, _ := jobs(t, two)
	ctx := context.Background()
	if err := j.CreateInstanceTemplates(ctx); err != nil {
		t.Fatal(err)
	}
	if err := j.CreateInstanceGroupManagers(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := j.Config()
	cfg.Templates = cfg.Templates[:1]
	cfg.Managers = cfg.Managers[:2]
	j.SetConfig(cfg)
	plan, err := j.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, c := range plan {
		if strings.HasPrefix(c.What, "workers-") {
			count[c.Action]++
		}
	}
	if count["drain-revision"] != 1 || count["drain-group"] != 1 || len(plan) != 2 {
		t.Errorf("plan after the workers' project left the configuration: %v", plan)
	}
}
