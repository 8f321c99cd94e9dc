package gce_test

import (
	"context"
	"errors"
	"testing"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/system/gce"
)

// TestRunFirewallNamesRunAndOwner: the rule a run makes says, in its
// description, whose run it is, and RunFirewall reads that back, so that gc
// can find a killed run's rule.
func TestRunFirewallNamesRunAndOwner(t *testing.T) {
	w := newWorld(t)
	_, ms, err := start(t, gce.New(w.config("us-central1-a")), 1)
	if err != nil || len(ms) != 1 {
		t.Fatalf("start: %d machines, %v", len(ms), err)
	}
	c, err := computeapi.NewFirewallsRESTClient(context.Background(), option.WithEndpoint(w.url), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rules []*computepb.Firewall
	it := c.List(context.Background(), &computepb.ListFirewallsRequest{Project: project})
	for {
		f, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, f)
	}
	if len(rules) != 1 {
		t.Fatalf("%d firewall rules after a start, want 1", len(rules))
	}
	run, owner, ok := gce.RunFirewall(rules[0])
	if !ok || rules[0].GetName() != "bigm-"+run || owner != "tester" {
		t.Errorf("rule %s (%q): run %q, owner %q, ours %v; want bigm-RUN of tester", rules[0].GetName(), rules[0].GetDescription(), run, owner, ok)
	}
}

// TestRunFirewallRefusesLookalikes: a rule is a run's only with the run's
// name, its tag alone and the system's description; rules of older
// versions (no owner) stay recognisable.
func TestRunFirewallRefusesLookalikes(t *testing.T) {
	rule := func(name, desc string, tags ...string) *computepb.Firewall {
		return &computepb.Firewall{Name: &name, Description: &desc, TargetTags: tags}
	}
	for _, tc := range []struct {
		f          *computepb.Firewall
		run, owner string
		ours       bool
	}{
		{rule("bigm-r0a1b2c", "gcefleet run r0a1b2c of ann: the driver reaches its machines", "bigm-r0a1b2c"), "r0a1b2c", "ann", true},
		{rule("job-r0a1b2c", "gcefleet run r0a1b2c of ann: the driver reaches its machines", "job-r0a1b2c"), "r0a1b2c", "ann", true},
		{rule("bigm-r0a1b2c", "gcefleet bigmachine run r0a1b2c: the driver reaches its machines", "bigm-r0a1b2c"), "r0a1b2c", "", true},
		{rule("bigm-r0a1b2c", "allow the driver", "bigm-r0a1b2c"), "", "", false},
		{rule("bigm-r999999", "gcefleet run r0a1b2c of ann: the driver reaches its machines", "bigm-r999999"), "", "", false},
		{rule("bigm-r0a1b2c", "gcefleet run r0a1b2c of ann: the driver reaches its machines", "web"), "", "", false},
		{rule("bigm-r0a1b2c", "gcefleet run r0a1b2c of ann: the driver reaches its machines", "bigm-r0a1b2c", "web"), "", "", false},
		{rule("-r0a1b2c", "gcefleet run r0a1b2c of ann: the driver reaches its machines", "-r0a1b2c"), "", "", false},
	} {
		run, owner, ok := gce.RunFirewall(tc.f)
		if run != tc.run || owner != tc.owner || ok != tc.ours {
			t.Errorf("RunFirewall(%s %q %v) = %q, %q, %v; want %q, %q, %v", tc.f.GetName(), tc.f.GetDescription(), tc.f.GetTargetTags(), run, owner, ok, tc.run, tc.owner, tc.ours)
		}
	}
}
