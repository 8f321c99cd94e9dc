// Command gceboot is the bootstrap a bigmachine machine boots: it serves the
// driver just enough to receive the driver's binary, which it then execs.
// It listens with the credentials of its configuration and accepts only
// the driver of that run. Without a keepalive from the driver it exits,
// and on Compute Engine it deletes its instance first.
//
// On Compute Engine (the gce system) it is the container that the
// instance's gce-container-declaration runs. The instance metadata
// (bigmachine-boot) gives it only public things: the run's CA certificate
// and nonce. It makes its own key, and serves a proof that it is this
// instance (its identity token, for the nonce and its key) until the
// driver hands it a certificate for that key; see package
// gcefleet/identity.
//
// A pool machine (instance metadata gcefleet-pool, which a backend's
// gceboot template sets: the provider's public claim key, the fleet CA
// certificate, a nonce) enrolls with its backend the same way, for a
// fleet certificate, and then waits warm, serving TLS with it, for a
// driver's claim: the provider's signed word that a lease holds this
// machine. Once claimed it makes a key for the run, has the driver certify
// it, and serves the run's bootstrap, accepting only the run's CA; see
// package gcefleet/claim. A pool machine runs the driver's program as its
// child rather than becoming it (bigmachine.BootOptions.Supervise), and
// serves a control server beside it (port 8444 by default): when the
// lease ends (the backend retires the machine, or the latest claim the
// driver renewed expires) gceboot kills every process of the run, so that
// the old lessee reaches nothing on the machine even before Compute
// deletes it. As root it runs the program as nobody (65534), so that the
// program cannot kill or trace gceboot. Started by
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
		ctl  *instance.Control // a pool machine's lease
	)
	if c, ok, cerr := bigmachine.ReadWorkerConfig(); ok {
		if cerr != nil {
			fail(2, cerr)
		}
		cfg = c
		ln, err = local.New().Listen(cfg.Listen)
	} else {
		exit = func(code int) {
			dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := instance.DeleteSelf(dctx); err != nil {
				log.Error("deleting this instance", "err", err)
			}
			os.Exit(code)
		}
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		pc, pool, perr := instance.Pool(pctx)
		cancel()
		if perr != nil {
			fail(1, perr)
		}
		if pool {
			// A warm pool machine waits for its claim as long as it
			// lives: the backend deletes it when the fleet shrinks.
			cfg, ln, ctl, err = instance.ServePool(ctx, pc, log, exit)
			if err != nil {
				log.Error("gceboot", "err", err)
				exit(1)
			}
		} else {
			bctx, cancel := context.WithTimeout(ctx, time.Minute)
			bc, berr := instance.Boot(bctx)
			cancel()
			if berr != nil {
				fail(1, berr)
			}
			// A machine no driver enrolls has lost its driver: it goes,
			// as one whose keepalive lapses does.
			ectx, cancel := context.WithTimeout(ctx, enrollTimeout)
			cfg, ln, err = instance.Enroll(ectx, bc, log)
			cancel()
			if err != nil {
				log.Error("gceboot", "err", err)
				exit(1)
			}
		}
	}
	if err != nil {
		fail(1, fmt.Errorf("listening on %s: %w", cfg.Listen, err))
	}
	log.Info("gceboot serving", "machine", cfg.Name, "addr", ln.Addr().String())
	if ctl == nil {
		fail(1, bigmachine.Bootstrap(cfg, ln, log, exit))
	}
	boot, err := bigmachine.NewBoot(cfg, log, exit, bigmachine.BootOptions{Supervise: true})
	if err != nil {
		log.Error("gceboot", "err", err)
		exit(1)
	}
	ctl.Guard(boot.End)
	fail(1, boot.Serve(ln))
}

// enrollTimeout is how long gceboot waits for its driver to enroll it.
const enrollTimeout = 10 * time.Minute

func fail(code int, err error) {
	fmt.Fprintln(os.Stderr, "gceboot:", err)
	os.Exit(code)
}
