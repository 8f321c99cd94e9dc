// Command gceboot is the bootstrap a bigmachine machine boots: it serves the
// driver just enough to receive the driver's binary, which it then execs.
// It listens with the credentials of its configuration and accepts only
// the driver of that run. Without a keepalive from the driver it exits,
// and on Compute Engine it deletes its instance first.
//
// On Compute Engine (the gce system) it is the container that the
// instance's gce-container-declaration runs, and it waits for its
// configuration in the instance metadata (bigmachine-config). Started by
// the local system, it reads its configuration from the inherited pipe
// whose descriptor GCEFLEET_BIGMACHINE names.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/system/gce/instance"
	"github.com/gcefleet/gcefleet/system/local"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var (
		cfg  bigmachine.WorkerConfig
		ln   net.Listener
		exit = os.Exit
		err  error
	)
	if c, ok, cerr := bigmachine.ReadWorkerConfig(); ok {
		if cerr != nil {
			fail(2, cerr)
		}
		cfg = c
		ln, err = local.New().Listen(cfg.Listen)
	} else {
		log.Info("gceboot waiting for its configuration in the instance metadata", "key", instance.ConfigKey)
		if cfg, err = instance.Config(ctx); err != nil {
			fail(1, fmt.Errorf("reading %s from the metadata server: %w", instance.ConfigKey, err))
		}
		exit = func(code int) {
			dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := instance.DeleteSelf(dctx); err != nil {
				log.Error("deleting this instance", "err", err)
			}
			os.Exit(code)
		}
		ln, err = instance.Listen(cfg.Listen)
	}
	if err != nil {
		fail(1, fmt.Errorf("listening on %s: %w", cfg.Listen, err))
	}
	log.Info("gceboot serving", "machine", cfg.Name, "addr", ln.Addr().String())
	fail(1, bigmachine.Bootstrap(cfg, ln, log, exit))
}

func fail(code int, err error) {
	fmt.Fprintln(os.Stderr, "gceboot:", err)
	os.Exit(code)
}
