package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gcefleet/gcefleet/backend"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// burst measures a burst of lease requests on a fleet at its minimum:
// one template in three zones, minimum 2 and maximum 300 each, instances
// that take boot to reach RUNNING, and requests queued at once; the time
// until every request is fulfilled and the Compute calls it took. It uses
// only what the backend, provider and emulator had before demand counted,
// so that the same file measures either revision.
func burst(requests int, boot, interval, limit time.Duration) error {
	ctx := context.Background()
	emu := emulator.New(emulator.Options{Latency: emulator.Latency{Provisioning: boot / 2, Staging: boot - boot/2}})
	defer emu.Close()
	if err := emu.SetQuota("bench-project", "us-central1", "INSTANCES", 1e9); err != nil {
		return err
	}
	for _, q := range []string{"CPUS", "DISKS_TOTAL_GB", "IN_USE_ADDRESSES"} {
		if err := emu.SetQuota("bench-project", "us-central1", q, 1e9); err != nil {
			return err
		}
	}
	esrv := httptest.NewServer(emu)
	defer esrv.Close()
	compute, err := gcecompute.NewClient(ctx, esrv.URL)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "backend-burst-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(ctx, filepath.Join(dir, "provider.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	pcfg, err := provider.ParseConfig("bench", []byte("tokens:\n  - {name: gce, role: backend, token: backend-token-0123456789}\n  - {name: alice, role: client, token: client-token-0123456789}\n"))
	if err != nil {
		return err
	}
	pcfg.MaxPendingPerClient = requests + 1
	p := provider.New(st, pcfg, slog.New(slog.DiscardHandler))
	psrv := httptest.NewServer(p.Handler())
	defer psrv.Close()
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go p.Run(rctx)

	cfg := "templates:\n  - {base_name: burst, project: bench-project, dimensions: {os: linux}, machine_type: e2-micro, image: projects/debian-cloud/global/images/family/debian-12}\nmanagers:\n"
	for _, z := range []string{"us-central1-a", "us-central1-b", "us-central1-c"} {
		cfg += fmt.Sprintf("  - {template_base_name: burst, zone: %s, minimum_size: 2, maximum_size: 300}\n", z)
	}
	cfg += fmt.Sprintf("settings:\n  interval: %s\n", interval)
	path := filepath.Join(dir, "fleet.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return err
	}
	bcfg, err := backend.LoadConfig(path)
	if err != nil {
		return err
	}
	fmt.Printf("burst: %d requests at once on 3 groups at their minimum of 2 (max 300), instances boot in %v, job interval %v\n", requests, boot, interval)
	reg := prometheus.NewRegistry()
	b := backend.Run(rctx, bcfg, compute, &client.Client{BaseURL: psrv.URL, Token: "backend-token-0123456789"},
		backend.Options{ConfigPath: path, Store: st, Registry: reg}, slog.New(slog.DiscardHandler))
	if err := until(ctx, 5*time.Minute, func() (bool, error) {
		ms, _, err := st.Counts(ctx)
		return ms[store.Available] == 6, err
	}); err != nil {
		return fmt.Errorf("the fleet at its minimum: %w", err)
	}
	// Let the fleet settle at rest before the burst.
	time.Sleep(2 * time.Second)
	alice := &client.Client{BaseURL: psrv.URL, Token: "client-token-0123456789"}
	calls, methods := compute.Calls(), counts(reg)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, requests)
	for i := range requests {
		wg.Go(func() {
			_, err := alice.RequestLease(ctx, store.LeaseRequest{RequestID: fmt.Sprint("burst-", i), Dimensions: store.Dimensions{"os": {"linux"}},
				Term: store.Term{Duration: time.Hour}})
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return fmt.Errorf("requesting: %w", err)
	}
	queued := time.Since(start)
	last := time.Now()
	err = until(ctx, limit, func() (bool, error) {
		_, ls, err := st.Counts(ctx)
		if time.Since(last) > 10*time.Second {
			fmt.Printf("  %6.1fs  %d of %d fulfilled, %d Compute calls\n", time.Since(start).Seconds(), ls[store.Fulfilled], requests, compute.Calls()-calls)
			last = time.Now()
		}
		return ls[store.Fulfilled] == requests, err
	})
	took := time.Since(start)
	_, ls, _ := st.Counts(ctx)
	if err != nil {
		fmt.Printf("NOT DONE: %d of %d fulfilled after %.1fs, %d Compute calls (%s)\n", ls[store.Fulfilled], requests, took.Seconds(), compute.Calls()-calls, diff(counts(reg), methods))
		return nil
	}
	fmt.Printf("all %d fulfilled %.1fs after the burst (queued in %.2fs; boot %v), %d Compute calls: %s\n",
		requests, took.Seconds(), queued.Seconds(), boot, compute.Calls()-calls, diff(counts(reg), methods))
	var sizes []string
	total := 0
	for k, s := range b.Jobs().Stats() {
		sizes = append(sizes, fmt.Sprintf("%s %d", k[strings.Index(k, "/")+1:strings.LastIndex(k, "/")], s.Target))
		total += s.Target
	}
	sort.Strings(sizes)
	fmt.Printf("groups' targets then: %d in all (%s)\n", total, strings.Join(sizes, ", "))
	return nil
}

// until calls cond every 50ms until it holds, fails, or limit passes.
func until(ctx context.Context, limit time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
