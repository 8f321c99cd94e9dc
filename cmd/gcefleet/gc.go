package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/api/iterator"

	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/system/gce"
)

func gcCommand() *command {
	return &command{
		name:    "gc",
		summary: "delete instances and firewall rules left behind by drivers that are gone",
		usage:   "--project P [--older-than D] [--run RUN] [--dry-run]",
		help: `Finds instances that bigmachine runs made (labelled gcefleet-role=bigmachine
and gcefleet-run=RUN) in every zone of the project, and deletes those of
runs whose newest instance is older than --older-than: a driver renews its
machines' keepalives, and machines whose driver is gone delete themselves,
so instances that old were left behind by a driver that could not clean
up (killed along with its machines' access to the Compute API, say).
--run deletes one run's instances whatever their age. Instances without
gcefleet's labels are never touched.

It also deletes each run's firewall rule (PREFIX-RUN) once the run has no
instance left and the rule is older than --older-than, or with the run's
instances. Firewall rules carry no labels: a rule is gcefleet's only if
its name, its target tag and its description ("gcefleet run RUN of
OWNER: ...") are what a run writes. A dry run says why younger runs are
kept. gc waits until its deletions are done, saying how they go, and ends
with what it deleted.

Example:
  gcefleet gc --project my-project --dry-run
  gcefleet gc --project my-project --older-than 2h`,
		flags: func(fs *flag.FlagSet) func(context.Context, *environ, []string) error {
			project := fs.String("project", "", "Google Cloud `project`")
			endpoint := fs.String("compute-endpoint", "", "Compute API base `URL`; empty is real GCE, http://127.0.0.1:8780 the emulator")
			olderThan := fs.Duration("older-than", 12*time.Hour, "delete runs whose newest instance is older than this")
			run := fs.String("run", "", "delete the instances of this `run` only, whatever their age")
			dryRun := fs.Bool("dry-run", false, "list what would be deleted, delete nothing")
			return func(ctx context.Context, env *environ, args []string) error {
				if *project == "" {
					return usagef("gc: --project is required (or GCEFLEET_PROJECT)")
				}
				if len(args) > 0 {
					return usagef("gc: unexpected arguments %q", args)
				}
				if !projectID.MatchString(*project) {
					return usagef("gc: --project %q is not a project id: 6-30 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen (gcloud projects list shows them in its PROJECT_ID column)", *project)
				}
				if err := gcecompute.CheckEndpoint(*endpoint); err != nil {
					return usagef("gc: --compute-endpoint: %v", err)
				}
				if *olderThan < 0 {
					return usagef("gc: --older-than %v is negative: give the age past which a run counts as left behind, such as 2h (0 counts every run; --run names one)", *olderThan)
				}
				return gc(ctx, env, *project, *endpoint, *olderThan, *run, *dryRun)
			}
		},
	}
}

type leftover struct {
	in        *computepb.Instance
	zone, run string
	age       time.Duration
}

func gc(ctx context.Context, env *environ, project, endpoint string, olderThan time.Duration, run string, dryRun bool) error {
	ctx = gcecompute.WithRetryLog(ctx, env.logger())
	c, err := gcecompute.NewClient(ctx, endpoint)
	if err != nil {
		return err
	}
	defer c.Close()
	filter := fmt.Sprintf("labels.%s = bigmachine", gce.RoleLabel)
	if run != "" {
		filter += fmt.Sprintf(" AND labels.%s = %q", gce.RunLabel, run)
	}
	ins, err := listInstances(ctx, c, project, filter)
	if err != nil {
		return fmt.Errorf("listing instances of project %s: %w", project, err)
	}
	var all []leftover
	newest := map[string]time.Duration{} // run -> age of its newest instance
	for _, in := range ins {
		created, _ := time.Parse(time.RFC3339, in.GetCreationTimestamp())
		l := leftover{in: in, zone: gcecompute.LastSegment(in.GetZone()), run: in.GetLabels()[gce.RunLabel], age: time.Since(created)}
		if a, ok := newest[l.run]; !ok || l.age < a {
			newest[l.run] = l.age
		}
		all = append(all, l)
	}
	var doomed []leftover
	for _, l := range all {
		if run != "" || newest[l.run] > olderThan {
			doomed = append(doomed, l)
		}
	}
	sort.Slice(doomed, func(i, j int) bool { return doomed[i].in.GetName() < doomed[j].in.GetName() })
	rules, kept, err := leftoverRules(ctx, c, project, run, olderThan, newest)
	if err != nil {
		return err
	}
	if dryRun {
		for r, age := range newest {
			if run == "" && age <= olderThan {
				kept = append(kept, fmt.Sprintf("keeping run %s: its newest instance is %v old, younger than --older-than %v", r, age.Round(time.Second), olderThan))
			}
		}
		sort.Strings(kept)
		for _, k := range kept {
			fmt.Fprintln(env.stdout, k)
		}
	}
	if len(doomed) == 0 && len(rules) == 0 {
		fmt.Fprintf(env.stdout, "nothing to delete: %d gcefleet instances, none of a run older than %v; no firewall rule of a run that is gone\n", len(all), olderThan)
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	if len(doomed) > 0 {
		fmt.Fprintln(tw, "INSTANCE\tZONE\tRUN\tOWNER\tAGE\tSTATUS")
		for _, l := range doomed {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", l.in.GetName(), l.zone, l.run, l.in.GetLabels()[gce.OwnerLabel], l.age.Round(time.Second), l.in.GetStatus())
		}
	}
	tw.Flush()
	if len(rules) > 0 {
		fmt.Fprintln(tw, "FIREWALL RULE\tRUN\tOWNER\tAGE")
		for _, r := range rules {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", r.f.GetName(), r.run, r.owner, r.age.Round(time.Second))
		}
		tw.Flush()
	}
	if dryRun {
		fmt.Fprintf(env.stdout, "dry run: would delete %s and %s\n", plural(len(doomed), "instance"), plural(len(rules), "firewall rule"))
		return nil
	}
	byZone := map[string][]*computepb.Instance{}
	for _, l := range doomed {
		byZone[l.zone] = append(byZone[l.zone], l.in)
	}
	var errs []error
	for zone, ins := range byZone {
		errs = append(errs, deleteLeftovers(ctx, c, project, zone, ins))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(doomed) > 0 {
		fmt.Fprintf(env.stdout, "deleting %s in %s\n", plural(len(doomed), "instance"), plural(len(byZone), "zone"))
		if err := waitGone(ctx, env, c, project, doomed); err != nil {
			return err
		}
	}
	var deleted []string
	for _, r := range rules {
		if err := deleteRule(ctx, c, project, r.f); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, r.f.GetName())
	}
	var said []string
	if len(doomed) > 0 {
		said = append(said, fmt.Sprintf("%s in %s", plural(len(doomed), "instance"), plural(len(byZone), "zone")))
	}
	if len(deleted) > 0 {
		said = append(said, fmt.Sprintf("%s (%s)", plural(len(deleted), "firewall rule"), strings.Join(deleted, ", ")))
	}
	if len(said) > 0 {
		fmt.Fprintf(env.stdout, "deleted %s\n", strings.Join(said, " and "))
	}
	return errors.Join(errs...)
}

// leftoverRule is a run's firewall rule that gc deletes.
type leftoverRule struct {
	f          *computepb.Firewall
	run, owner string
	age        time.Duration
}

// leftoverRules lists the project's firewall rules and returns those of
// runs that are gone (or being deleted), with a line for each rule kept
// because it is younger than olderThan. newest holds the age of each run's
// newest instance; a rule of a run with instances goes with them. Only
// rules gce.RunFirewall recognises are considered: firewalls carry no
// labels, and a rule gcefleet did not make is never touched.
func leftoverRules(ctx context.Context, c *gcecompute.Client, project, run string, olderThan time.Duration, newest map[string]time.Duration) ([]leftoverRule, []string, error) {
	var rules []leftoverRule
	var kept []string
	err := gcecompute.Retry(ctx, func() error {
		rules, kept = rules[:0], kept[:0]
		it := c.Firewalls.List(ctx, &computepb.ListFirewallsRequest{Project: project})
		for {
			f, err := it.Next()
			if errors.Is(err, iterator.Done) {
				return nil
			}
			if err != nil {
				return err
			}
			r, owner, ours := gce.RunFirewall(f)
			if !ours || run != "" && r != run {
				continue
			}
			created, _ := time.Parse(time.RFC3339, f.GetCreationTimestamp())
			l := leftoverRule{f: f, run: r, owner: owner, age: time.Since(created)}
			instanceAge, live := newest[r]
			switch {
			case run != "":
			case live && instanceAge > olderThan:
			case live:
				continue // its run's instances are kept, and said so
			case l.age <= olderThan:
				kept = append(kept, fmt.Sprintf("keeping firewall rule %s: run %s has no instance left, but the rule is %v old, younger than --older-than %v", f.GetName(), r, l.age.Round(time.Second), olderThan))
				continue
			}
			rules = append(rules, l)
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listing firewall rules of project %s: %w", project, err)
	}
	sort.Slice(rules, func(i, j int) bool { return rules[i].f.GetName() < rules[j].f.GetName() })
	return rules, kept, nil
}

// deleteRule deletes f, a run's firewall rule, and waits until it is gone;
// one already gone is no error.
func deleteRule(ctx context.Context, c *gcecompute.Client, project string, f *computepb.Firewall) error {
	if _, _, ours := gce.RunFirewall(f); !ours {
		return fmt.Errorf("refusing to delete firewall rule %s: gcefleet did not make it", f.GetName())
	}
	req := &computepb.DeleteFirewallRequest{Project: project, Firewall: f.GetName(), RequestId: new(gcecompute.RequestID())}
	err := gcecompute.Retry(ctx, func() error {
		op, err := c.Firewalls.Delete(ctx, req)
		if err != nil {
			return err
		}
		return c.Wait(ctx, project, op)
	})
	if err != nil && gcecompute.Classify(err) != gcecompute.NotFound {
		return fmt.Errorf("deleting firewall rule %s: %w", f.GetName(), err)
	}
	return nil
}

// gcWaitLimit bounds how long gc waits for its deletions: GCE deletes an
// instance in a minute or two.
const gcWaitLimit = 15 * time.Minute

// waitGone waits until no instance of doomed is left, saying every
// env.progress (10s by default) how many are.
func waitGone(ctx context.Context, env *environ, c *gcecompute.Client, project string, doomed []leftover) error {
	every := env.progress
	if every <= 0 {
		every = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, gcWaitLimit)
	defer cancel()
	want := map[string]bool{}
	for _, l := range doomed {
		want[l.zone+"/"+l.in.GetName()] = true
	}
	filter := fmt.Sprintf("labels.%s = bigmachine", gce.RoleLabel)
	began, said := time.Now(), time.Now()
	// It looks often, to end soon after the last deletion, and speaks
	// seldom.
	tick := time.NewTicker(min(every, time.Second))
	defer tick.Stop()
	for {
		left := 0
		ins, err := listInstances(ctx, c, project, filter)
		for _, in := range ins {
			if want[gcecompute.LastSegment(in.GetZone())+"/"+in.GetName()] {
				left++
			}
		}
		if err != nil {
			return fmt.Errorf("waiting for %s to be deleted (%v so far; run gc again to go on): %w", plural(len(doomed), "instance"), time.Since(began).Round(time.Second), err)
		}
		if left == 0 {
			return nil
		}
		if time.Since(said) >= every {
			said = time.Now()
			fmt.Fprintf(env.stderr, "gc: waiting for GCE to delete %s: %d left (%v so far)\n", plural(len(doomed), "instance"), left, time.Since(began).Round(time.Second))
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to be deleted: %d left after %v; run gc again to go on: %w", plural(len(doomed), "instance"), left, time.Since(began).Round(time.Second), ctx.Err())
		}
	}
}

// deleteLeftovers deletes ins, instances of zone, without waiting for the
// deletions to finish. It refuses an instance that lacks the labels of a
// bigmachine run, whatever the list that found it asked for.
func deleteLeftovers(ctx context.Context, c *gcecompute.Client, project, zone string, ins []*computepb.Instance) error {
	var errs []error
	var names []string
	for _, in := range ins {
		if in.GetLabels()[gce.RunLabel] == "" || in.GetLabels()[gce.RoleLabel] != "bigmachine" {
			errs = append(errs, fmt.Errorf("refusing to delete %s: it carries no %s label", in.GetName(), gce.RunLabel))
			continue
		}
		names = append(names, in.GetName())
	}
	return errors.Join(append(errs, c.DeleteInstances(ctx, project, zone, names))...)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// listInstances lists the project's instances that filter selects, in
// every zone, retrying what GCE says to retry.
func listInstances(ctx context.Context, c *gcecompute.Client, project, filter string) ([]*computepb.Instance, error) {
	var out []*computepb.Instance
	err := gcecompute.Retry(ctx, func() error {
		out = out[:0]
		it := c.Instances.AggregatedList(ctx, &computepb.AggregatedListInstancesRequest{Project: project, Filter: &filter})
		for {
			pair, err := it.Next()
			if errors.Is(err, iterator.Done) {
				return nil
			}
			if err != nil {
				return err
			}
			out = append(out, pair.Value.GetInstances()...)
		}
	})
	return out, err
}
