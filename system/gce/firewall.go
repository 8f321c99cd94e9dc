package gce

import (
	"regexp"
	"slices"
	"strings"

	"cloud.google.com/go/compute/apiv1/computepb"
)

// firewallDescription is the description of a run's firewall rule. GCE
// firewall rules carry no labels, so this text is what marks the rule as
// the run's: RunFirewall reads it back.
func firewallDescription(run, owner string) string {
	return "gcefleet run " + run + " of " + owner + ": the driver reaches its machines"
}

var (
	// firewallDescribed matches what firewallDescription writes.
	firewallDescribed = regexp.MustCompile(`^gcefleet run (r[0-9a-f]+) of ([-_a-z0-9]+): the driver reaches its machines$`)
	// firewallDescribedOld matches what runs wrote before the owner was
	// named, so that their rules stay recognisable.
	firewallDescribedOld = regexp.MustCompile(`^gcefleet bigmachine run (r[0-9a-f]+): the driver reaches its machines$`)
)

// RunFirewall returns the run (and, for rules made since it was recorded,
// the owner) of f, a firewall rule, and whether f is a run's rule as the
// gce system makes it: named PREFIX-RUN, targeting that tag alone, and
// described by the system's own text. A rule that differs in any of these
// is not gcefleet's, whatever its name looks like.
func RunFirewall(f *computepb.Firewall) (run, owner string, ok bool) {
	if m := firewallDescribed.FindStringSubmatch(f.GetDescription()); m != nil {
		run, owner = m[1], m[2]
	} else if m := firewallDescribedOld.FindStringSubmatch(f.GetDescription()); m != nil {
		run = m[1]
	} else {
		return "", "", false
	}
	name := f.GetName()
	prefix, found := strings.CutSuffix(name, "-"+run)
	if !found || !namePart.MatchString(prefix) || !slices.Equal(f.GetTargetTags(), []string{name}) {
		return "", "", false
	}
	return run, owner, true
}
