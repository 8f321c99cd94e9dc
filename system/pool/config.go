package pool

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/gcefleet/gcefleet/provider/api"
)

// Config says which provider the pool system leases machines from, as
// whom, and what machines.
type Config struct {
	// Provider is the Machine Provider's base URL, such as
	// http://127.0.0.1:8790.
	Provider string
	// Token is the provider's bearer token of a client; TokenFile, if
	// set, is a file that holds it instead (a token on a command line is
	// readable by every user of the host, in /proc).
	Token, TokenFile string
	// Dimensions are what each machine must have, besides the
	// gceboot=true that marks a pool machine.
	Dimensions api.Dimensions
	// Backend, if set, is the only backend (by its token's name in the
	// provider's configuration) whose machines the driver leases and
	// claims: its leases ask for pool_backend=Backend, which the provider
	// sets on every pool machine to its backend, so that no other
	// backend's warm machine is leased (and, refused, released and
	// deleted). Empty: any backend the provider trusts with pool
	// machines (pool: true on its token); a claimed machine gets the
	// run's certificate.
	Backend string
	// Lease is each lease's term: the driver extends it every third of
	// it while it runs, so a driver that dies leaves its machines for at
	// most this long.
	Lease time.Duration
	// StartTimeout bounds how long Start waits for the provider to fulfil
	// its leases; zero means three quarters of the time bigmachine gives
	// Start, so that the machines leased have the rest to boot.
	StartTimeout time.Duration
	// Run names the run's lease requests (RUN-0001, RUN-0002, ...);
	// empty means a random one. A Start retried with the same run gets
	// the leases the first one made, not new ones.
	Run string
	// KeepalivePeriod and KeepaliveTimeout time the driver's keepalives
	// to its machines.
	KeepalivePeriod, KeepaliveTimeout time.Duration

	envErrs []error // variables RegisterFlags could not read, for Validate
}

// PoolDimension marks a warm gceboot machine in the catalog: every lease
// of the pool system asks for it.
const PoolDimension = "gceboot"

// PoolBackendDimension is the dimension the provider sets on a pool
// machine to its backend's name (provider.PoolBackendDimension): a
// lease with Backend asks for it.
const PoolBackendDimension = "pool_backend"

// DefaultConfig returns the defaults, with the environment's say:
// GCEFLEET_PROVIDER and GCEFLEET_TOKEN, as the gcefleet command reads
// them, and GCEFLEET_TOKEN_FILE, a file that holds the token.
func DefaultConfig() Config {
	return Config{
		Provider:         os.Getenv("GCEFLEET_PROVIDER"),
		Token:            os.Getenv("GCEFLEET_TOKEN"),
		TokenFile:        os.Getenv("GCEFLEET_TOKEN_FILE"),
		Dimensions:       api.Dimensions{},
		Lease:            2 * time.Minute,
		KeepalivePeriod:  2 * time.Second,
		KeepaliveTimeout: 30 * time.Second,
	}
}

// envNames are the variables of the flags, in their help.
var envNames = map[string]string{
	"pool.provider":   "GCEFLEET_PROVIDER",
	"pool.token":      "GCEFLEET_TOKEN",
	"pool.token-file": "GCEFLEET_TOKEN_FILE",
	"pool.dim":        "GCEFLEET_POOL_DIMS",
	"pool.lease":      "GCEFLEET_POOL_LEASE",
	"pool.backend":    "GCEFLEET_POOL_BACKEND",
}

// EnvName returns the environment variable of the flag pool.NAME, ""
// for a flag the pool system does not have.
func EnvName(flagName string) string { return envNames[flagName] }

// RegisterFlags binds the configuration to flags named pool.*, with c's
// values as defaults. Each flag's help names its environment variable.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Provider, "pool.provider", c.Provider, "Machine Provider `URL`, such as http://127.0.0.1:8790")
	// A Func, so that help never prints the token the variable gave.
	fs.Func("pool.token", "the provider's client `token`; on a command line every user of this host can read it (in /proc): prefer GCEFLEET_TOKEN or -pool.token-file", func(s string) error {
		c.Token = s
		return nil
	})
	fs.StringVar(&c.TokenFile, "pool.token-file", c.TokenFile, "`file` holding the provider's client token (read by the driver only)")
	fs.Func("pool.dim", "a dimension each machine must have, `KEY=VALUE` (repeat the flag for more; the variable takes KEY=VALUE,KEY=VALUE)", func(s string) error {
		return c.addDimension(s)
	})
	fs.StringVar(&c.Backend, "pool.backend", c.Backend, "lease and claim only the pool machines of the backend `NAME` (its token's name in the provider's configuration, such as gce): the machines run the driver's code and get the run's certificate; empty: those of any backend the provider trusts with pool machines (pool: true on its token)")
	fs.DurationVar(&c.Lease, "pool.lease", c.Lease, "each lease's term, extended every third of it while the driver runs: a driver that dies leaves its machines for at most this `duration`")
	fs.VisitAll(func(f *flag.Flag) {
		name, ok := envNames[f.Name]
		if !ok {
			return
		}
		f.Usage += " (env " + name + ")"
		if name == "GCEFLEET_POOL_DIMS" || name == "GCEFLEET_POOL_LEASE" || name == "GCEFLEET_POOL_BACKEND" {
			// The others DefaultConfig has read.
			if v := os.Getenv(name); v != "" {
				var err error
				if name == "GCEFLEET_POOL_DIMS" {
					for _, kv := range strings.Split(v, ",") {
						if err = f.Value.Set(kv); err != nil {
							break
						}
					}
				} else if name == "GCEFLEET_POOL_LEASE" {
					lease := c.Lease
					if err = f.Value.Set(v); err != nil {
						c.Lease = lease // a failed Set leaves zero
						err = errors.New("not a duration: give one such as 2m")
					}
				} else {
					err = f.Value.Set(v)
				}
				if err != nil {
					c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q: %w", name, v, err))
				}
			}
		}
	})
}

func (c *Config) addDimension(s string) error {
	k, v, ok := strings.Cut(s, "=")
	k, v = strings.TrimSpace(k), strings.TrimSpace(v)
	if !ok || k == "" || v == "" {
		return fmt.Errorf("want KEY=VALUE, such as cpus=2, got %q", s)
	}
	if strings.Contains(v, ",") {
		return fmt.Errorf("%q: one KEY=VALUE each -pool.dim; repeat the flag for more (-pool.dim os=linux -pool.dim cpus=2)", s)
	}
	if c.Dimensions == nil {
		c.Dimensions = api.Dimensions{}
	}
	c.Dimensions[k] = append(c.Dimensions[k], v)
	return nil
}

// Bounds of the configuration.
const (
	minLease = 10 * time.Second
	maxLease = 24 * time.Hour
)

// Validate returns every problem with the configuration, each saying how
// to fix it. It reads TokenFile.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	errs = append(errs, c.envErrs...)
	if c.Provider == "" {
		bad("no provider: set -pool.provider or GCEFLEET_PROVIDER to the Machine Provider's URL, such as http://127.0.0.1:8790")
	} else if u, err := url.Parse(c.Provider); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("provider %q is not a URL: write http://HOST:PORT, such as http://127.0.0.1:8790", c.Provider)
	}
	if _, err := c.token(); err != nil {
		errs = append(errs, err)
	}
	if v, ok := c.Dimensions[PoolDimension]; ok && (len(v) != 1 || v[0] != "true") {
		bad("dimension %s=%s: the pool system leases only pool machines (%s=true); leave it out", PoolDimension, strings.Join(v, ","), PoolDimension)
	}
	if _, ok := c.Dimensions[PoolBackendDimension]; ok {
		bad("dimension %s: give the backend with -pool.backend (GCEFLEET_POOL_BACKEND), not -pool.dim", PoolBackendDimension)
	}
	if c.Backend != "" && (len(c.Backend) > 64 || strings.ContainsFunc(c.Backend, func(r rune) bool { return r <= ' ' || r > '~' })) {
		bad("backend %q: a backend's token name in the provider's configuration, such as gce (-pool.backend)", c.Backend)
	}
	if c.Lease < minLease || c.Lease > maxLease {
		bad("lease %v: give a term of %v to %v (-pool.lease), such as 2m", c.Lease, minLease, maxLease)
	}
	if c.StartTimeout < 0 {
		bad("start timeout %v: give a positive duration, or zero for bigmachine's", c.StartTimeout)
	}
	if c.Run != "" && (len(c.Run) > 64 || strings.ContainsFunc(c.Run, func(r rune) bool { return r <= ' ' || r > '~' })) {
		bad("run %q: at most 64 printable characters without spaces", c.Run)
	}
	if c.KeepalivePeriod <= 0 || c.KeepaliveTimeout < 2*c.KeepalivePeriod {
		bad("keepalive timeout %v must be at least twice the period %v", c.KeepaliveTimeout, c.KeepalivePeriod)
	}
	if len(errs) > 0 {
		return fmt.Errorf("pool system: %w", errors.Join(errs...))
	}
	return nil
}

// token returns the client token, from TokenFile if it is set.
func (c *Config) token() (string, error) {
	if c.TokenFile != "" && c.Token != "" {
		return "", errors.New("both a token (-pool.token or GCEFLEET_TOKEN) and a token file (-pool.token-file or GCEFLEET_TOKEN_FILE): give one")
	}
	if c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return "", fmt.Errorf("token file: %w (-pool.token-file or GCEFLEET_TOKEN_FILE names a file holding the provider's client token)", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" || strings.ContainsAny(t, " \t\r\n") {
			return "", fmt.Errorf("token file %s: want one token on one line", c.TokenFile)
		}
		return t, nil
	}
	if c.Token == "" {
		return "", errors.New("no token: set GCEFLEET_TOKEN (or -pool.token-file) to a client token from the provider's configuration")
	}
	return c.Token, nil
}

// leaseDimensions are what every lease asks for: c's and gceboot=true.
func (c *Config) leaseDimensions() api.Dimensions {
	d := api.Dimensions{PoolDimension: {"true"}}
	if c.Backend != "" {
		d[PoolBackendDimension] = []string{c.Backend}
	}
	for k, vs := range c.Dimensions {
		if k != PoolDimension && k != PoolBackendDimension {
			d[k] = append([]string(nil), vs...)
		}
	}
	return d
}

// dimString writes d as k=v,k=v in key order.
func dimString(d api.Dimensions) string {
	var kvs []string
	for k, vs := range d {
		for _, v := range vs {
			kvs = append(kvs, k+"="+v)
		}
	}
	sort.Strings(kvs)
	return strings.Join(kvs, ",")
}
