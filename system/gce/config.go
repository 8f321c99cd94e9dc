package gce

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Config says where and how the gce system makes machines.
type Config struct {
	// Project is the Google Cloud project.
	Project string
	// Zones are tried in order: a zone out of capacity or quota passes
	// the rest of the machines to the next.
	Zones []string
	// MachineType is the machines' type, such as e2-standard-2.
	MachineType string
	// Image is the gceboot container image, such as
	// gcr.io/PROJECT/gceboot:TAG.
	Image string
	// BootImage is the Container-Optimized OS image the machines boot.
	BootImage string
	// ServiceAccount runs the machines; "default" is the project's
	// Compute Engine default service account.
	ServiceAccount string
	// Network and Subnetwork place the machines; empty means default.
	Network, Subnetwork string
	// ExternalIP gives machines an external address and has the driver
	// call them there; by default it calls their internal address.
	ExternalIP bool
	// Spot makes Spot machines; SpotFallback retries as standard machines
	// when no zone has Spot capacity.
	Spot, SpotFallback bool
	// DiskSizeGB is the boot disk size.
	DiskSizeGB int64
	// Labels are added to every machine.
	Labels map[string]string
	// Endpoint is the Compute API base URL; empty means real Compute
	// Engine with Application Default Credentials.
	Endpoint string
	// Port is the port machines serve on.
	Port int
	// MaxRunDuration caps each machine's life: GCE deletes it then,
	// whatever happens to the driver.
	MaxRunDuration time.Duration
	// Firewall has the system ensure a rule that lets the driver reach
	// the machines' port; turn it off when you manage firewalls.
	Firewall bool
	// FirewallSource is the address range the rule admits; empty means
	// this host's address on the route to the Compute endpoint.
	FirewallSource string
	// Prefix starts every machine name: PREFIX-RUN-INDEX.
	Prefix string
	// Owner is recorded in the gcefleet-owner label.
	Owner string
	// KeepalivePeriod and KeepaliveTimeout time the driver's keepalives.
	KeepalivePeriod, KeepaliveTimeout time.Duration

	envErrs []error // variables RegisterFlags could not read, for Validate
}

// DefaultConfig returns the defaults, with the environment's say: the
// seed's PROJECT, ZONE, IMG and TAG variables, and GCEFLEET_* ones.
func DefaultConfig() Config {
	c := Config{
		Project:          env("GCEFLEET_PROJECT", "PROJECT"),
		MachineType:      "e2-standard-2",
		BootImage:        "projects/cos-cloud/global/images/family/cos-stable",
		ServiceAccount:   "default",
		DiskSizeGB:       10,
		Endpoint:         env("GCEFLEET_COMPUTE_ENDPOINT"),
		Port:             8443,
		MaxRunDuration:   12 * time.Hour,
		Firewall:         true,
		Prefix:           "bigm",
		Owner:            labelValue(env("USER", "LOGNAME")),
		KeepalivePeriod:  2 * time.Second,
		KeepaliveTimeout: 30 * time.Second,
	}
	if z := env("GCEFLEET_ZONES", "GCEFLEET_ZONE", "ZONE"); z != "" {
		c.Zones = strings.Split(z, ",")
	}
	if img := env("GCEFLEET_IMAGE", "IMG"); img != "" {
		if tag := env("GCEFLEET_IMAGE_TAG", "TAG"); tag != "" && !strings.Contains(img[strings.LastIndexByte(img, '/')+1:], ":") {
			img += ":" + tag
		}
		c.Image = img
	} else if c.Project != "" {
		c.Image = "gcr.io/" + c.Project + "/gceboot:latest"
	}
	return c
}

func env(keys ...string) string {
	for _, k := range keys {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return ""
}

// RegisterFlags binds the configuration to flags named gce.*, with c's
// values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Project, "gce.project", c.Project, "Google Cloud `project` (env GCEFLEET_PROJECT or PROJECT)")
	// A Func flag shows no default of its own; say it only if there is one.
	zones := ""
	if len(c.Zones) > 0 {
		zones = "; default " + strings.Join(c.Zones, ",")
	}
	fs.Func("gce.zones", "comma-separated `zones`, tried in order (env GCEFLEET_ZONES, GCEFLEET_ZONE or ZONE"+zones+")", func(s string) error {
		c.Zones = strings.Split(s, ",")
		return nil
	})
	fs.StringVar(&c.MachineType, "gce.machine-type", c.MachineType, "machine `type`")
	fs.StringVar(&c.Image, "gce.image", c.Image, "gceboot container `image` (env GCEFLEET_IMAGE or IMG, with TAG)")
	fs.StringVar(&c.ServiceAccount, "gce.service-account", c.ServiceAccount, "service account `email` the machines run as")
	fs.StringVar(&c.Network, "gce.network", c.Network, "VPC `network` (default: default)")
	fs.StringVar(&c.Subnetwork, "gce.subnetwork", c.Subnetwork, "`subnetwork`")
	fs.BoolVar(&c.ExternalIP, "gce.external-ip", c.ExternalIP, "give machines external addresses and call them there")
	fs.BoolVar(&c.Spot, "gce.spot", c.Spot, "make Spot machines")
	fs.BoolVar(&c.SpotFallback, "gce.spot-fallback", c.SpotFallback, "when no zone has Spot capacity, make standard machines")
	fs.Int64Var(&c.DiskSizeGB, "gce.disk-size", c.DiskSizeGB, "boot disk size in `GB`")
	fs.Func("gce.labels", "extra labels, `key=value,...`", func(s string) error {
		c.Labels = map[string]string{}
		for _, kv := range strings.Split(s, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("label %q is not key=value", kv)
			}
			c.Labels[k] = v
		}
		return nil
	})
	fs.StringVar(&c.Endpoint, "gce.compute-endpoint", c.Endpoint, "Compute API base `URL`; empty is real GCE, http://127.0.0.1:8780 the emulator (env GCEFLEET_COMPUTE_ENDPOINT)")
	fs.Func("gce.endpoint", "deprecated: use -gce.compute-endpoint", func(s string) error {
		fmt.Fprintln(fs.Output(), "warning: -gce.endpoint is deprecated: use -gce.compute-endpoint (or GCEFLEET_COMPUTE_ENDPOINT)")
		c.Endpoint = s
		return nil
	})
	fs.IntVar(&c.Port, "gce.port", c.Port, "`port` the machines serve on")
	fs.DurationVar(&c.MaxRunDuration, "gce.max-run", c.MaxRunDuration, "cap on each machine's life; GCE deletes it then")
	fs.BoolVar(&c.Firewall, "gce.firewall", c.Firewall, "ensure a firewall rule that lets this driver reach the machines")
	fs.StringVar(&c.FirewallSource, "gce.firewall-source", c.FirewallSource, "source `CIDR` of that rule (default: this host's address)")
	fs.StringVar(&c.Prefix, "gce.prefix", c.Prefix, "machine name `prefix`")
	fs.DurationVar(&c.KeepaliveTimeout, "gce.keepalive-timeout", c.KeepaliveTimeout, "how long a machine lives without its driver")

	// Every flag but the deprecated one has its variable, named in its
	// help; DefaultConfig has read those it reads with the seed's.
	readByDefault := map[string]bool{"gce.project": true, "gce.zones": true, "gce.image": true, "gce.compute-endpoint": true}
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.HasPrefix(f.Name, "gce.") || strings.HasPrefix(f.Usage, "deprecated") {
			return
		}
		name := EnvName(f.Name)
		if !strings.Contains(f.Usage, name) {
			f.Usage += " (env " + name + ")"
		}
		if v := os.Getenv(name); v != "" && !readByDefault[f.Name] {
			if err := f.Value.Set(v); err != nil {
				c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
}

// EnvName is the environment variable of the flag gce.NAME: GCEFLEET_NAME,
// in capitals with underscores.
func EnvName(flagName string) string {
	return "GCEFLEET_" + strings.ToUpper(strings.ReplaceAll(strings.TrimPrefix(flagName, "gce."), "-", "_"))
}

var (
	namePart  = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	zoneName  = regexp.MustCompile(`^[a-z]+-[a-z]+[0-9]+-[a-z]$`)
	labelKey  = regexp.MustCompile(`^[a-z][-_a-z0-9]{0,62}$`)
	labelVal  = regexp.MustCompile(`^[-_a-z0-9]{0,63}$`)
	projectID = regexp.MustCompile(`^[a-z][-a-z0-9]{4,28}[a-z0-9]$`)
)

// Validate returns every problem with the configuration, each saying how
// to fix it.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	errs = append(errs, c.envErrs...)
	if c.Project == "" {
		bad("no project: set -gce.project or GCEFLEET_PROJECT (or PROJECT)")
	} else if !projectID.MatchString(c.Project) {
		bad("project %q is not a project id (6-30 lowercase letters, digits and hyphens)", c.Project)
	}
	if len(c.Zones) == 0 {
		bad("no zone: set -gce.zones or GCEFLEET_ZONE (or ZONE), e.g. us-central1-a,us-central1-b")
	}
	for _, z := range c.Zones {
		if !zoneName.MatchString(z) {
			bad("zone %q is not a zone name like us-central1-a", z)
		}
	}
	if c.Image == "" {
		bad("no gceboot image: set -gce.image or GCEFLEET_IMAGE (or IMG and TAG), e.g. gcr.io/%s/gceboot:v1", c.Project)
	}
	if !namePart.MatchString(c.Prefix) || len(c.Prefix) > 40 {
		bad("prefix %q must start with a letter and hold only lowercase letters, digits and hyphens (at most 40)", c.Prefix)
	}
	if c.Port < 1024 || c.Port > 65535 {
		bad("port %d: use an unprivileged port, 1024-65535", c.Port)
	}
	if c.MaxRunDuration < time.Minute || c.MaxRunDuration > 120*24*time.Hour {
		bad("max run %v: GCE takes 1 minute to 120 days", c.MaxRunDuration)
	}
	for k, v := range c.Labels {
		if !labelKey.MatchString(k) || !labelVal.MatchString(v) {
			bad("label %s=%s: keys start with a lowercase letter; keys and values hold lowercase letters, digits, _ and -", k, v)
		}
	}
	if c.KeepalivePeriod <= 0 || c.KeepaliveTimeout < 2*c.KeepalivePeriod {
		bad("keepalive timeout %v must be at least twice the period %v", c.KeepaliveTimeout, c.KeepalivePeriod)
	}
	if len(errs) > 0 {
		return fmt.Errorf("gce system: %w", errors.Join(errs...))
	}
	return nil
}

// labelValue makes s fit a label value.
func labelValue(s string) string {
	s = strings.ToLower(s)
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		}
	}
	out := b.String()
	if len(out) > 63 {
		out = out[:63]
	}
	if out == "" {
		out = "unknown"
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }
