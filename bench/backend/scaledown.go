package main

// The -scaledown mode: machine-minutes of idle surplus after a busy
// window ends, with idle_timeout against the same fleet without it (the
// backend before idle_timeout, which never deleted an idle machine).

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// world is one deployment: a provider on its own store, a backend on a
// fleet file, and a client.
type world struct {
	name    string
	path    string
	st      *store.Store
	alice   *client.Client
	compute *gcecompute.Client
	reload  chan struct{}
	b       *backend.Backend
}

const scaledownFleet = `templates:
  - {base_name: burst, project: %s, dimensions: {os: linux}, machine_type: e2-micro, image: projects/debian-cloud/global/images/family/debian-12}
managers:
  - {template_base_name: burst, zone: us-central1-a, minimum_size: %d, maximum_size: %d%s}
settings:
  interval: %s
`

func newWorld(ctx context.Context, name, dir, computeURL string, minimum, maximum int, extra string, interval time.Duration) (*world, error) {
	w := &world{name: name, path: filepath.Join(dir, name+".yaml"), reload: make(chan struct{}, 1)}
	var err error
	if w.st, err = store.Open(ctx, filepath.Join(dir, name+".db")); err != nil {
		return nil, err
	}
	pcfg, err := provider.ParseConfig("bench", []byte("tokens:\n  - {name: gce, role: backend, token: backend-token-0123456789}\n  - {name: alice, role: client, token: client-token-0123456789}\n"))
	if err != nil {
		return nil, err
	}
	psrv := httptest.NewServer(provider.New(w.st, pcfg, slog.New(slog.DiscardHandler)).Handler())
	w.alice = &client.Client{BaseURL: psrv.URL, Token: "client-token-0123456789"}
	if w.compute, err = gcecompute.NewClient(ctx, computeURL); err != nil {
		return nil, err
	}
	if err := w.write(minimum, maximum, extra, interval); err != nil {
		return nil, err
	}
	cfg, err := backend.LoadConfig(w.path)
	if err != nil {
		return nil, err
	}
	w.b = backend.Run(ctx, cfg, w.compute, &client.Client{BaseURL: psrv.URL, Token: "backend-token-0123456789"},
		backend.Options{ConfigPath: w.path, Reload: w.reload, Store: w.st, Replica: name}, slog.New(slog.DiscardHandler))
	return w, nil
}

func (w *world) write(minimum, maximum int, extra string, interval time.Duration) error {
	return os.WriteFile(w.path, []byte(fmt.Sprintf(scaledownFleet, "bench-"+w.name, minimum, maximum, extra, interval)), 0o600)
}

// machines counts the world's cataloged machines and when the idle ones
// were cataloged.
func (w *world) machines(ctx context.Context) (n int, idleSince []time.Time, err error) {
	ms, err := w.st.Machines(ctx, "")
	for _, m := range ms {
		if m.State == store.Available {
			idleSince = append(idleSince, m.Added)
		}
	}
	return len(ms), idleSince, err
}

func runScaledown(n int, interval, idleTimeout time.Duration) error {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	emu := emulator.New(emulator.Options{})
	defer emu.Close()
	for _, p := range []string{"bench-new", "bench-old"} {
		for _, q := range []string{"INSTANCES", "CPUS", "DISKS_TOTAL_GB", "IN_USE_ADDRESSES"} {
			if err := emu.SetQuota(p, "us-central1", q, 1e9); err != nil {
				return err
			}
		}
	}
	esrv := httptest.NewServer(emu)
	defer esrv.Close()
	dir, err := os.MkdirTemp("", "scaledown-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	const minimum = 2
	idle := fmt.Sprintf(", idle_timeout: %s", idleTimeout)
	// The busy window: both fleets keep n.
	fresh, err := newWorld(ctx, "new", dir, esrv.URL, n, 2*n, idle, interval)
	if err != nil {
		return err
	}
	old, err := newWorld(ctx, "old", dir, esrv.URL, n, 2*n, "", interval)
	if err != nil {
		return err
	}
	fmt.Printf("GCE Backend scale-down: a window keeps %d machines, then ends (minimum %d); job interval %v, idle_timeout %v against none\n\n",
		n, minimum, interval, idleTimeout)
	start := time.Now()
	for _, w := range []*world{fresh, old} {
		for {
			got, _, err := w.machines(ctx)
			if err != nil {
				return err
			}
			if got == n {
				break
			}
			if time.Since(start) > 5*time.Minute {
				return fmt.Errorf("%s: %d of %d cataloged after 5 minutes", w.name, got, n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	fmt.Printf("both fleets at %d after %.1fs\n", n, time.Since(start).Seconds())
	// A burst in the window: half the fleet leased and released (those
	// machines are deleted and replaced as always).
	for _, w := range []*world{fresh, old} {
		for i := range n / 2 {
			l, err := w.alice.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprint("burst-", i), Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: time.Hour}})
			if err != nil {
				return err
			}
			if _, err := w.alice.Release(ctx, l.ID); err != nil {
				return err
			}
		}
	}
	// The burst's machines are deleted and replaced: wait for the fleets
	// to hold n idle again.
	for _, w := range []*world{fresh, old} {
		wait := time.Now()
		for {
			got, idle, err := w.machines(ctx)
			if err != nil {
				return err
			}
			if got == n && len(idle) == n {
				break
			}
			if time.Since(wait) > 5*time.Minute {
				return fmt.Errorf("%s: %d of %d cataloged after the burst, after 5 minutes", w.name, got, n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	fmt.Printf("a burst of %d leased and released; both fleets at %d idle again after %.1fs\n", n/2, n, time.Since(start).Seconds())
	// The window ends: the minimum is 2 again.
	for _, w := range []*world{fresh, old} {
		extra := ""
		if w == fresh {
			extra = idle
		}
		if err := w.write(minimum, 2*n, extra, interval); err != nil {
			return err
		}
		w.reload <- struct{}{}
	}
	t0 := time.Now()
	_, since, err := fresh.machines(ctx)
	if err != nil {
		return err
	}
	latest := t0
	var deadlines []time.Time // when each idle machine is due to go: idle_timeout and one interval after it idled
	for _, s := range since {
		deadlines = append(deadlines, s.Add(idleTimeout+interval))
		if s.Add(idleTimeout).After(latest) {
			latest = s.Add(idleTimeout)
		}
	}
	bound := latest.Add(interval).Sub(t0)
	callsBefore := fresh.compute.Calls()
	window := max(bound, idleTimeout) + 3*interval
	var surplus [2]float64 // machine-minutes beyond the minimum
	var late float64       // of the new fleet's, beyond each machine's deadline
	var back time.Duration
	last := t0
	for time.Since(t0) < window {
		time.Sleep(250 * time.Millisecond)
		now := time.Now()
		dt := now.Sub(last).Minutes()
		last = now
		for i, w := range []*world{fresh, old} {
			got, _, err := w.machines(ctx)
			if err != nil {
				return err
			}
			surplus[i] += float64(max(0, got-minimum)) * dt
			if i == 0 && got <= minimum && back == 0 {
				back = now.Sub(t0)
			}
			if i == 0 {
				allowed := 0
				for _, d := range deadlines {
					if d.After(now) {
						allowed++
					}
				}
				late += float64(max(0, got-minimum-allowed)) * dt
			}
		}
	}
	gotNew, _, _ := fresh.machines(ctx)
	gotOld, _, _ := old.machines(ctx)
	fmt.Printf("after the window ends, over %.0fs:\n", window.Seconds())
	if back > 0 {
		fmt.Printf("  idle_timeout %v: back at the minimum of %d after %.1fs (bound: idle_timeout + one interval from the last machine's idling = %.1fs); %.2f idle machine-minutes beyond the minimum, %.2f of them beyond idle_timeout + one interval (target 0); %d Compute calls\n",
			idleTimeout, minimum, back.Seconds(), bound.Seconds(), surplus[0], late, fresh.compute.Calls()-callsBefore)
	} else {
		fmt.Printf("  idle_timeout %v: NOT back at the minimum (%d machines); %.2f idle machine-minutes beyond it\n", idleTimeout, gotNew, surplus[0])
	}
	fmt.Printf("  no idle_timeout (as before): %d machines at the end, never shrinking; %.2f idle machine-minutes beyond the minimum in the same window (%.1f an hour)\n",
		gotOld, surplus[1], float64(gotOld-minimum)*60)
	stop()
	fresh.b.Wait()
	old.b.Wait()
	return nil
}
