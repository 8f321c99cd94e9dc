package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// gcPercent is the garbage collector's target that gcefleet serve runs
// with unless GOGC is set. A provider's live heap is small (tens of MB)
// and every request allocates: collecting when the heap reaches 5x the
// live heap rather than Go's default 2x measured 12-20% more lease+release
// pairs a second (docs/benchmarks.md) for some tens of MB.
const gcPercent = 400

func serveCommand() *command {
	return &command{
		name:    "serve",
		summary: "run the Machine Provider and, if configured, the GCE Backend",
		usage:   "--config FILE",
		help: `Serves the Machine Provider's HTTP/JSON API (/v1/, described at
/v1/openapi.yaml), its status page (/) and metrics (/metrics), keeping its
state in SQLite (the default, a file) or PostgreSQL (for several replicas).
SIGINT or SIGTERM stops it after in-flight requests finish.

In a browser, / sends you to /login, where a token of the config signs you
in (a session cookie; the role decides what the page shows). Prometheus
scrapes /metrics with a bearer token of its own:

  scrape_configs:
    - job_name: gcefleet
      authorization: {type: Bearer, credentials_file: /etc/prometheus/gcefleet.token}
      static_configs: [{targets: ['HOST:8790']}]

The config file (YAML):

  listen: 127.0.0.1:8790
  database: gcefleet.db            # or postgres://user@host/db
  tokens:
    - {name: ops,   role: admin,   token_env: GCEFLEET_ADMIN_TOKEN}
    - {name: gce,   role: backend, token_file: /etc/gcefleet/gce.token}   # pool: true lets another process's backend catalog pool machines
    - {name: alice, role: client,  token: 3f9c0b6e8d1a4c27b5e0}
  backend:                         # optional: run the GCE Backend here
    config: fleet.yaml             # templates, managers, settings
    token: gce                     # the backend token it calls the provider with
  lease_retention: 720h            # ended leases and events kept this long (the default)
  tls: {cert_file: provider.pem, key_file: provider.key}   # optional: serve https (do, off this host)

A token written in the file (token:) is refused unless only the file's
owner can read it (chmod 600). Off this host, serve over TLS: bearer tokens
and the claims of pool leases cross the network with every call. Clients
trust the certificate by the system's roots, or by SSL_CERT_FILE.

With a backend, declared instance templates and managed instance groups
are made on Compute Engine, their running instances cataloged, and an
instance whose lease was reclaimed deleted and replaced. Groups grow with
demand: a tenth above their leased machines, plus each waiting request
(given to one group that can make its machine, within a second), plus a
manager's min_idle spares, within minimum and maximum; schedules change
the minimum and min_idle by day and hour, and idle_timeout deletes idle
surplus machines by name, never a leased one. Each group is published to
the provider as an offer, and a request nothing offers is refused at once.
A changed template is a new revision whose groups grow as the old
revision's drain (idle machines removed, leased ones when their lease
ends) and are deleted. The backend's file is read again when it changes
and on SIGHUP; a file that does not parse leaves the last good one in
force, and says why on the status page (/) and in metrics. Several
replicas may serve one PostgreSQL database: one of them runs the backend
at a time, and another takes over within seconds when it dies.
The backend touches only what carries its deployment's identity
(settings.deployment, or a random id made at the first start), which the
database keeps: serve refuses a settings.deployment other than the stored
one.

Example:
  gcefleet serve --config fleet.yaml`,
		flags: func(fs *flag.FlagSet) func(context.Context, *environ, []string) error {
			config := fs.String("config", "", "configuration `file` (YAML)")
			drain := fs.Duration("drain", 30*time.Second, "how long to let in-flight requests finish when stopping")
			return func(ctx context.Context, env *environ, args []string) error {
				if *config == "" {
					return usagef("serve: --config is required (or GCEFLEET_CONFIG); see gcefleet serve --help for the format")
				}
				cfg, err := provider.LoadConfig(*config)
				if err != nil {
					return err
				}
				if env.getenv("GOGC") == "" {
					debug.SetGCPercent(gcPercent)
				}
				log := slog.New(slog.NewTextHandler(env.stderr, nil))
				start, err := backendStarter(ctx, cfg, log)
				if err != nil {
					return err
				}
				self, scheme := cfg.SelfClient()
				return provider.Serve(ctx, cfg, log, *drain, func(addr string, s *provider.Server) {
					fmt.Fprintf(env.stdout, "%s://%s\n", scheme, addr)
					start(scheme+"://"+addr, self, s)
				})
			}
		},
	}
}

// backendStarter loads the GCE Backend's configuration, if the provider's
// names one, and returns what starts it once the provider listens.
func backendStarter(ctx context.Context, cfg provider.Config, log *slog.Logger) (func(url string, hc *http.Client, s *provider.Server), error) {
	if cfg.Backend == nil {
		return func(string, *http.Client, *provider.Server) {}, nil
	}
	path := cfg.Backend.Config // relative to the provider's file already
	bcfg, startErr := backend.LoadConfig(path)
	if startErr != nil {
		// A bad file must not stop a fleet that ran: run on the last
		// good configuration, if the database has one, and say why.
		var err error
		if bcfg, err = lastGoodConfig(ctx, cfg.Database, path); err != nil {
			return nil, startErr
		}
		log.Error("the backend's configuration file was refused; running on the last good one from the database", "err", startErr)
	}
	for _, w := range bcfg.Warnings {
		log.Warn(w)
	}
	// The deployment's identity, made at its first start: a name that
	// is not the stored one stops serve here, with what to do.
	deployment, err := deploymentOf(ctx, cfg.Database, bcfg.Settings.Deployment)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	compute, err := gcecompute.NewClient(ctx, bcfg.Settings.Endpoint)
	if err != nil {
		return nil, err
	}
	secret := cfg.Secret(cfg.Backend.Token)
	reload := make(chan struct{}, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case reload <- struct{}{}:
				default:
				}
			}
		}
	}()
	return func(url string, hc *http.Client, s *provider.Server) {
		if bcfg.Settings.Provider != "" {
			url, hc = bcfg.Settings.Provider, nil // a provider elsewhere
		} else if ca, err := backend.LoadFleetCA(ctx, s.Store(), deployment); err != nil {
			log.Error("the backend's fleet CA: its pool machines get no claims", "err", err)
		} else if err := s.PinFleetCA(ctx, cfg.Backend.Token, ca.CertPEM); err != nil {
			// Its pool machines then name a CA that is not pinned,
			// and their leases carry no claims.
			log.Error("pinning the backend's fleet CA: its pool machines get no claims", "err", err)
		}
		prov := &client.Client{BaseURL: url, Token: secret, HTTP: hc}
		bctx, stop := context.WithCancel(ctx) // ends, at the latest, when Serve returns
		b := backend.Run(bctx, bcfg, compute, prov, backend.Options{
			ConfigPath: path, Reload: reload, Store: s.Store(), Registry: s.Registry(), StartErr: startErr, Deployment: deployment,
		}, log.With("part", "backend"))
		s.AddStatus(b.StatusHTML)
		s.Defer(func() { stop(); b.Wait() })
		log.Info("GCE backend running", "deployment", deployment, "templates", len(bcfg.Templates), "managers", len(bcfg.Managers))
	}, nil
}

// deploymentOf returns the identity of the deployment whose provider
// database is database, making it there at the first start.
func deploymentOf(ctx context.Context, database, name string) (string, error) {
	st, err := store.Open(ctx, database)
	if err != nil {
		return "", err
	}
	defer st.Close()
	return backend.Deployment(ctx, st, name)
}

// lastGoodConfig reads the configuration a backend last ran on from the
// provider's database.
func lastGoodConfig(ctx context.Context, database, path string) (backend.Config, error) {
	st, err := store.Open(ctx, database)
	if err != nil {
		return backend.Config{}, err
	}
	defer st.Close()
	data, err := backend.LastGoodConfig(ctx, st)
	if err != nil {
		return backend.Config{}, err
	}
	return backend.ParseConfig(path+" (the last good one, from the database)", data)
}

func planCommand() *command {
	return &command{
		name:    "plan",
		summary: "show what the GCE Backend would change for a config",
		usage:   "--config FLEET.yaml [--database URL]",
		help: `Checks a GCE Backend configuration (every problem, each with its line) and
prints what the backend would create, resize and drain on Compute Engine to
match it, without changing anything. The Compute endpoint is the config's
settings.compute_endpoint (empty: real GCE with Application Default Credentials).
It shows only this deployment's resources: the deployment is the one
settings.deployment names or, with --database (the provider's database,
which keeps the deployment's identity and the backend's state), the
database's; with --database it also sees the projects the configuration no
longer names, and the idle machines idle_timeout would delete now
(delete-idle). Each manager with schedules says its window in force and
when that changes.

Example:
  gcefleet plan --config fleet.yaml --database gcefleet.db`,
		flags: func(fs *flag.FlagSet) func(context.Context, *environ, []string) error {
			config := fs.String("config", "", "the backend's configuration `file` (YAML)")
			database := fs.String("database", "", "the provider's database (a SQLite file or postgres:// `URL`, as serve's config names it), to read the backend's state from")
			return func(ctx context.Context, env *environ, args []string) error {
				if *config == "" {
					return usagef("plan: --config is required")
				}
				cfg, err := backend.LoadConfig(*config)
				if err != nil {
					return err
				}
				compute, err := gcecompute.NewClient(ctx, cfg.Settings.Endpoint)
				if err != nil {
					return err
				}
				defer compute.Close()
				j := backend.NewJobs(compute, nil, cfg, slog.New(slog.DiscardHandler))
				var catalog []store.Machine // with --database: what idle_timeout would delete
				if *database == "" && cfg.Settings.Deployment == "" {
					return fmt.Errorf("plan: which deployment's resources are its own? %s names none (settings.deployment): give --database, the provider's database, which keeps the deployment's identity, or name the deployment in settings.deployment", *config)
				}
				if *database != "" {
					if !strings.Contains(*database, "://") {
						if _, err := os.Stat(*database); err != nil {
							return fmt.Errorf("--database %s: %w (give the database serve uses, as its config's database names it)", *database, err)
						}
					}
					// Not migrated: a preview changes nothing.
					st, err := store.OpenCurrent(ctx, *database)
					if err != nil {
						return err
					}
					defer st.Close()
					id, err := backend.StoredDeployment(ctx, st)
					switch {
					case errors.Is(err, store.ErrNotFound) && cfg.Settings.Deployment == "":
						return fmt.Errorf("plan: the database %s holds no deployment identity yet (serve makes one at its first start), and %s names none: name the deployment in settings.deployment, or start serve once", *database, *config)
					case errors.Is(err, store.ErrNotFound):
						id = cfg.Settings.Deployment
					case err != nil:
						return err
					case cfg.Settings.Deployment != "" && cfg.Settings.Deployment != id:
						return fmt.Errorf("plan: %s names deployment %q, but the database %s is deployment %q's; serve would refuse it too: set settings.deployment: %s (or remove it)", *config, cfg.Settings.Deployment, *database, id, id)
					}
					j.SetDeployment(id)
					// No fence: Plan changes nothing, so nothing is saved.
					if err := j.LoadState(ctx, st, store.Fence{}); err != nil {
						return err
					}
					if catalog, err = st.Machines(ctx, ""); err != nil {
						return err
					}
					if err := j.PreviewPool(ctx, st); err != nil {
						return fmt.Errorf("plan: %w", err)
					}
				}
				changes, err := j.Plan(ctx)
				if err != nil {
					return err
				}
				idle, err := j.PlanIdle(catalog)
				if err != nil {
					return err
				}
				changes = append(changes, idle...)
				if len(changes) == 0 {
					fmt.Fprintln(env.stdout, "no changes: Compute Engine matches the configuration")
				}
				for _, c := range changes {
					fmt.Fprintln(env.stdout, c)
				}
				// The schedules: what is in force and when that changes.
				for _, w := range j.Windows() {
					if !w.Next.IsZero() {
						fmt.Fprintln(env.stdout, w)
					}
				}
				return nil
			}
		},
	}
}

// providerFlags are the flags every client command has.
type providerFlags struct {
	url, token, tokenFile string
	json                  bool
}

func (p *providerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.url, "provider", "http://127.0.0.1:8790", "Machine Provider `URL`")
	fs.StringVar(&p.token, "token", "", "bearer `token`; on a command line every user of this host can read it (in /proc): prefer GCEFLEET_TOKEN or --token-file")
	fs.StringVar(&p.tokenFile, "token-file", "", "`file` holding the bearer token, one line")
	fs.BoolVar(&p.json, "json", false, "print JSON instead of a table")
}

func (p *providerFlags) client(name string) (*client.Client, error) {
	if u, err := url.Parse(p.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("%s: --provider %q is not a URL: write http://HOST:PORT, such as http://127.0.0.1:8790", name, p.url)
	}
	token := p.token
	switch {
	case p.tokenFile != "" && token != "":
		return nil, usagef("%s: both a token (--token or GCEFLEET_TOKEN) and a token file (--token-file or GCEFLEET_TOKEN_FILE): give one", name)
	case p.tokenFile != "":
		b, err := os.ReadFile(p.tokenFile)
		if err != nil {
			return nil, usagef("%s: --token-file: %v", name, err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" || strings.ContainsAny(token, " \t\r\n") {
			return nil, usagef("%s: --token-file %s: want one token on one line", name, p.tokenFile)
		}
	case token == "":
		return nil, usagef("%s: no token: set GCEFLEET_TOKEN, --token-file or --token to a token from the provider's configuration", name)
	}
	return &client.Client{BaseURL: strings.TrimSuffix(p.url, "/"), Token: token}, nil
}

// dimFlag collects --dim KEY=VALUE.
type dimFlag store.Dimensions

func (d dimFlag) String() string { return "" }
func (d dimFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" || v == "" {
		return fmt.Errorf("want KEY=VALUE, such as os=linux, got %q", s)
	}
	d[k] = append(d[k], v)
	return nil
}

func leaseCommand() *command {
	return &command{
		name:    "lease",
		summary: "lease a machine by dimensions for a duration",
		usage:   "--dim KEY=VALUE... (--duration D | --until TIME | --indefinite) [--wait]",
		help: `Asks the Machine Provider for a machine whose dimensions all match. The lease
is fulfilled at once if such a machine is free; otherwise it waits its turn
(first come, first served) until --deadline. With --wait the command waits
for it too, saying every 30s how long it has waited and its place in the
queue, and prints the machine; Ctrl-C while it waits withdraws the request
(it would otherwise take a machine no one uses). A request that no cataloged machine and no
backend's offer can satisfy is refused at once (exit 1), naming the
dimensions nothing offers and the closest offers.

Example:
  gcefleet lease --dim os=linux --dim cpus=8 --duration 2h --wait`,
		flags: func(fs *flag.FlagSet) func(context.Context, *environ, []string) error {
			var pf providerFlags
			pf.register(fs)
			dims := dimFlag{}
			fs.Var(dims, "dim", "a dimension the machine must have, `KEY=VALUE` (repeat for more)")
			var tf termFlags
			tf.register(fs)
			wait := fs.Bool("wait", false, "wait until the lease is fulfilled")
			deadline := fs.Duration("deadline", 24*time.Hour, "how long the request may wait for a machine")
			requestID := fs.String("request-id", "", "idempotency `id` (default: random); repeating it returns the same lease")
			return func(ctx context.Context, env *environ, args []string) error {
				if len(dims) == 0 {
					return usagef("lease: give at least one --dim, such as --dim os=linux")
				}
				c, err := pf.client("lease")
				if err != nil {
					return err
				}
				term, err := tf.term("lease")
				if err != nil {
					return err
				}
				id := *requestID
				if id == "" {
					b := make([]byte, 12)
					rand.Read(b)
					id = hex.EncodeToString(b)
				}
				l, err := c.RequestLease(ctx, store.LeaseRequest{RequestID: id, Dimensions: store.Dimensions(dims), Term: term, Deadline: time.Now().Add(*deadline)})
				if err != nil {
					return err
				}
				if *wait && l.State == store.Pending {
					place := ""
					if now, err := c.Lease(ctx, l.ID, 0); err == nil && now.QueuePosition > 0 {
						place = fmt.Sprintf(" (number %d of %d in the queue for these dimensions)", now.QueuePosition, now.QueueLength)
					}
					fmt.Fprintf(env.stderr, "lease %s is queued%s; waiting for a machine...\n", clean(l.ID), place)
					id := l.ID
					if l, err = waitWithProgress(ctx, env, c, l); err != nil {
						if ctx.Err() == nil {
							return err
						}
						return withdraw(c, id)
					}
				}
				if pf.json {
					return printJSON(env.stdout, l)
				}
				printLeases(env.stdout, []store.Lease{l})
				if l.State == store.Denied {
					return fmt.Errorf("lease %s: no machine came before the deadline", clean(l.ID))
				}
				return nil
			}
		},
	}
}

// withdraw releases the request of lease id, which the user stopped
// waiting for (Ctrl-C): left queued, it would take a machine that no one
// uses until its term ends.
func withdraw(c *client.Client, id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := c.Release(ctx, id)
	switch {
	case err != nil:
		return fmt.Errorf("lease %s: interrupted, and its request could not be withdrawn (%v): release it with gcefleet release %s", clean(id), err, clean(id))
	case l.State == store.Released:
		return fmt.Errorf("lease %s: interrupted; its request was withdrawn", clean(id))
	default:
		// Fulfilled as the interrupt came: the machine is the user's.
		return fmt.Errorf("lease %s: interrupted, but it is %s (hostname %s); release it with gcefleet release %s when done", clean(id), l.State, clean(l.Hostname), clean(id))
	}
}

// waitWithProgress waits for a pending lease to be fulfilled or denied,
// saying every env.progress (30s by default) how long it has waited.
func waitWithProgress(ctx context.Context, env *environ, c *client.Client, l store.Lease) (store.Lease, error) {
	every := env.progress
	if every <= 0 {
		every = 30 * time.Second
	}
	began := time.Now()
	for l.State == store.Pending {
		var err error
		if l, err = c.Lease(ctx, l.ID, every); err != nil {
			return l, err
		}
		if l.State == store.Pending {
			gives := ""
			if d := l.Request.Deadline; !d.IsZero() {
				gives = "; the request gives up at " + d.Local().Format(timeLayout)
			}
			place := ""
			if l.QueuePosition > 0 {
				place = fmt.Sprintf(", number %d of %d in the queue for these dimensions", l.QueuePosition, l.QueueLength)
			}
			fmt.Fprintf(env.stderr, "lease %s: still waiting for a machine with %s (%s so far%s%s)\n",
				clean(l.ID), dimString(l.Request.Dimensions), time.Since(began).Round(time.Second), place, gives)
		}
	}
	return l, nil
}

// timeLayout is how the commands print times: to the second, with the
// time zone, so that they read the same wherever they are pasted.
const timeLayout = "2006-01-02 15:04:05 MST"

// termFlags are the flags that give a lease's term.
type termFlags struct {
	duration   time.Duration
	until      string
	indefinite bool
}

func (t *termFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&t.duration, "duration", 0, "lease length, at most 504h (21 days)")
	fs.StringVar(&t.until, "until", "", "lease end, RFC 3339 `time`")
	fs.BoolVar(&t.indefinite, "indefinite", false, "lease until released")
}

// term returns the term the flags give, checked; cmd names the command in
// errors.
func (t *termFlags) term(cmd string) (store.Term, error) {
	term := store.Term{Duration: t.duration, Indefinite: t.indefinite}
	if t.until != "" {
		var err error
		if term.ExpiresAt, err = time.Parse(time.RFC3339, t.until); err != nil {
			return term, usagef("%s: --until: %q is not a time: write it in RFC 3339, such as 2026-12-01T18:00:00Z or 2026-12-01T18:00:00+01:00", cmd, t.until)
		}
	}
	if err := term.Validate(time.Now()); err != nil {
		return term, usagef("%s: %v (--duration, --until, --indefinite)", cmd, err)
	}
	return term, nil
}

func extendCommand() *command {
	return &command{
		name:    "extend",
		summary: "give fulfilled leases a new term from now",
		usage:   "(--duration D | --until TIME | --indefinite) LEASE_ID...",
		help:    "Extends leases: each gets the new term from now (at most 21 days, unless indefinite).\n\nExample:\n  gcefleet extend --duration 4h 7f3c9e02a1",
		flags: func(fs *flag.FlagSet) func(context.Context, *environ, []string) error {
			var pf providerFlags
			pf.register(fs)
			var tf termFlags
			tf.register(fs)
			return func(ctx context.Context, env *environ, args []string) error {
				if len(args) == 0 {
					return usagef("extend: name the lease to extend, e.g. gcefleet extend --duration 4h 7f3c9e02a1")
				}
				term, err := tf.term("extend")
				if err != nil {
					return err
				}
				c, err := pf.client("extend")
				if err != nil {
					return err
				}
				return eachLease(env, pf, args, func(id string) (store.Lease, error) { return c.Extend(ctx, id, term) })
			}
		},
		takesArgs: true,
	}
}

// eachLease applies do to each lease id and prints the leases it returns.
func eachLease(env *environ, pf providerFlags, ids []string, do func(id string) (store.Lease, error)) error {
	// Every lease is tried, and what was done is printed before what
	// failed: a bad id among several must not hide that the rest ended.
	var out []store.Lease
	var errs []error
	for _, id := range ids {
		l, err := do(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, l)
	}
	if len(out) > 0 || len(errs) == 0 {
		if pf.json {
			if err := printJSON(env.stdout, out); err != nil {
				return err
			}
		} else {
			printLeases(env.stdout, out)
		}
	}
	return errors.Join(errs...)
}

func releaseCommand() *command {
	return &command{
		name:    "release",
		summary: "release a lease before it expires",
		usage:   "LEASE_ID...",
		help:    "Ends leases; their machines are reclaimed.\n\nExample:\n  gcefleet release 7f3c9e02a1",
		flags: func(fs *flag.FlagSet) func(context.Context, *environ, []string) error {
			var pf providerFlags
			pf.register(fs)
			return func(ctx context.Context, env *environ, args []string) error {
				c, err := pf.client("release")
				if err != nil {
					return err
				}
				if len(args) == 0 {
					return usagef("release: name the lease to release, e.g. gcefleet release 7f3c9e02a1")
				}
				return eachLease(env, pf, args, func(id string) (store.Lease, error) { return c.Release(ctx, id) })
			}
		},
		takesArgs: true,
	}
}

func watchCommand() *command {
	return &command{
		name:    "watch",
		summary: "follow a lease until it ends",
		usage:   "LEASE_ID",
		help: `Prints a lease, then each change of its state or term (an extension),
until it ends: released, expired, or denied when no machine came before its
deadline. A pending lease is followed through its fulfilment. With --json, each is a line of JSON.

Example:
  gcefleet watch 7f3c9e02a1 && echo "the lease has ended"`,
		flags: func(fs *flag.FlagSet) func(context.Context, *environ, []string) error {
			var pf providerFlags
			pf.register(fs)
			return func(ctx context.Context, env *environ, args []string) error {
				if len(args) != 1 {
					return usagef("watch: name one lease to follow, e.g. gcefleet watch 7f3c9e02a1")
				}
				c, err := pf.client("watch")
				if err != nil {
					return err
				}
				l, err := c.Lease(ctx, args[0], 0)
				if err != nil {
					return err
				}
				if err := printChange(env.stdout, l, pf.json, false); err != nil {
					return err
				}
				// The provider's long poll ends when the state does; an
				// extension keeps the state, so a fulfilled lease is looked
				// at again every few seconds to see it.
				every := env.progress
				if every <= 0 {
					every = 2 * time.Second
				}
				for l.State == store.Pending || l.State == store.Fulfilled {
					wait := time.Minute
					if l.State == store.Fulfilled {
						wait = every
					}
					n, err := c.LeaseWhile(ctx, l.ID, l.State, wait)
					if err != nil {
						return err
					}
					extended := n.State == store.Fulfilled && l.State == store.Fulfilled && !n.ExpiresAt.Equal(l.ExpiresAt)
					if n.State != l.State || extended {
						if err := printChange(env.stdout, n, pf.json, extended); err != nil {
							return err
						}
					}
					l = n
				}
				return nil
			}
		},
		takesArgs: true,
	}
}

// printChange prints a lease as watch follows it: a line of JSON, or its
// id, its state and what that state means; extended says its term changed.
func printChange(w io.Writer, l store.Lease, asJSON, extended bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(l)
	}
	var what string
	switch l.State {
	case store.Pending:
		what = "waiting for a machine with " + dimString(l.Request.Dimensions)
	case store.Fulfilled:
		what = fmt.Sprintf("machine %s", clean(l.Hostname))
		if extended {
			what = "extended: " + what
		}
		if a := address(l.Machine); a != "-" {
			what += " at " + a
		}
		if l.ExpiresAt.IsZero() {
			what += ", until released"
		} else {
			what += ", expires " + l.ExpiresAt.Local().Format(timeLayout)
		}
	default:
		what = "ended " + l.Ended.Local().Format(timeLayout)
	}
	_, err := fmt.Fprintf(w, "%s  %-9s  %s\n", clean(l.ID), clean(l.State), what)
	return err
}

func machinesCommand() *command {
	return &command{
		name:    "machines",
		summary: "list the machines in the Machine Provider's catalog",
		help:    "Lists cataloged machines with their state and dimensions (a backend's token sees its own).\n\nExample:\n  gcefleet machines --json",
		flags: func(fs *flag.FlagSet) func(context.Context, *environ, []string) error {
			var pf providerFlags
			pf.register(fs)
			return func(ctx context.Context, env *environ, args []string) error {
				c, err := pf.client("machines")
				if err != nil {
					return err
				}
				ms, err := c.Machines(ctx)
				if err != nil {
					return err
				}
				if pf.json {
					return printJSON(env.stdout, ms)
				}
				tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "HOSTNAME\tBACKEND\tSTATE\tLEASE\tDIMENSIONS")
				for _, m := range ms {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", clean(m.Hostname), clean(m.Backend), clean(m.State), dash(m.LeaseID), dimString(m.Dimensions))
				}
				return tw.Flush()
			}
		},
	}
}

func leasesCommand() *command {
	return &command{
		name:    "leases",
		summary: "list your leases",
		help:    "Lists the caller's leases, newest first, with their machines and expiry.\n\nExample:\n  gcefleet leases --active",
		flags: func(fs *flag.FlagSet) func(context.Context, *environ, []string) error {
			var pf providerFlags
			pf.register(fs)
			active := fs.Bool("active", false, "only pending and fulfilled leases")
			return func(ctx context.Context, env *environ, args []string) error {
				c, err := pf.client("leases")
				if err != nil {
					return err
				}
				ls, err := c.Leases(ctx, *active)
				if err != nil {
					return err
				}
				if pf.json {
					return printJSON(env.stdout, ls)
				}
				if len(ls) == 0 {
					// An empty table reads as a broken command.
					if *active {
						fmt.Fprintln(env.stderr, "No active leases: gcefleet lease asks for one, and gcefleet leases without --active lists ended ones too.")
					} else {
						fmt.Fprintln(env.stderr, "No leases: gcefleet lease asks for one.")
					}
					return nil
				}
				printLeases(env.stdout, ls)
				return nil
			}
		},
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printLeases(w io.Writer, ls []store.Lease) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LEASE\tSTATE\tMACHINE\tADDRESS\tEXPIRES\tDIMENSIONS")
	for _, l := range ls {
		addr, expires := address(l.Machine), "-"
		switch {
		case !l.Ended.IsZero(): // its term no longer counts
			expires = "ended " + l.Ended.Local().Format(timeLayout)
		case l.State == store.Fulfilled && l.ExpiresAt.IsZero():
			expires = "never"
		case !l.ExpiresAt.IsZero():
			expires = l.ExpiresAt.Local().Format(timeLayout)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", clean(l.ID), clean(l.State), dash(l.Hostname), addr, expires, dimString(l.Request.Dimensions))
	}
	tw.Flush()
}

// address is how a machine is reached, HOST:PORT, or HOST alone when it
// names no port, or - for none.
func address(m *store.Machine) string {
	switch {
	case m == nil || m.Connection.Address == "":
		return "-"
	case m.Connection.Port == 0:
		return clean(m.Connection.Address)
	}
	return net.JoinHostPort(clean(m.Connection.Address), strconv.Itoa(m.Connection.Port))
}

// dash returns s cleaned for printing, or - for nothing.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return clean(s)
}

func dimString(d store.Dimensions) string {
	var parts []string
	for k, vs := range d {
		parts = append(parts, clean(k)+"="+clean(strings.Join(vs, ",")))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}
