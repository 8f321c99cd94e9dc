package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sort"
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
		summary: "delete instances left behind by drivers that are gone",
		usage:   "--project P [--older-than D] [--run RUN] [--dry-run]",
		help: `Finds instances that bigmachine runs made (labelled gcefleet-role=bigmachine
and gcefleet-run=RUN) in every zone of the project, and deletes those of
runs whose newest instance is older than --older-than: a driver renews its
machines' keepalives, and machines whose driver is gone delete themselves,
so instances that old were left behind by a driver that could not clean
up (killed along with its machines' access to the Compute API, say).
--run deletes one run's instances whatever their age. Instances without
gcefleet's labels are never touched.

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
	var all []leftover
	newest := map[string]time.Duration{} // run -> age of its newest instance
	err = gcecompute.Retry(ctx, func() error {
		all = all[:0]
		it := c.Instances.AggregatedList(ctx, &computepb.AggregatedListInstancesRequest{Project: project, Filter: &filter})
		for {
			pair, err := it.Next()
			if errors.Is(err, iterator.Done) {
				return nil
			}
			if err != nil {
				return err
			}
			for _, in := range pair.Value.GetInstances() {
				created, _ := time.Parse(time.RFC3339, in.GetCreationTimestamp())
				l := leftover{in: in, zone: gcecompute.LastSegment(in.GetZone()), run: in.GetLabels()[gce.RunLabel], age: time.Since(created)}
				if a, ok := newest[l.run]; !ok || l.age < a {
					newest[l.run] = l.age
				}
				all = append(all, l)
			}
		}
	})
	if err != nil {
		return fmt.Errorf("listing instances of project %s: %w", project, err)
	}
	var doomed []leftover
	for _, l := range all {
		if run != "" || newest[l.run] > olderThan {
			doomed = append(doomed, l)
		}
	}
	sort.Slice(doomed, func(i, j int) bool { return doomed[i].in.GetName() < doomed[j].in.GetName() })
	if len(doomed) == 0 {
		fmt.Fprintf(env.stdout, "nothing to delete: %d gcefleet instances, none of a run older than %v\n", len(all), olderThan)
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tZONE\tRUN\tOWNER\tAGE\tSTATUS")
	for _, l := range doomed {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", l.in.GetName(), l.zone, l.run, l.in.GetLabels()[gce.OwnerLabel], l.age.Round(time.Second), l.in.GetStatus())
	}
	tw.Flush()
	if dryRun {
		fmt.Fprintf(env.stdout, "dry run: would delete %d instances\n", len(doomed))
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
	fmt.Fprintf(env.stdout, "deleting %d instances in %s\n", len(doomed), plural(len(byZone), "zone"))
	return nil
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
