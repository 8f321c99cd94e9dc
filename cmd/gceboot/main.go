// Command gceboot is the bootstrap a bigmachine machine boots: it serves the
// driver just enough to receive the driver's binary, which it then execs.
// It listens with the credentials its configuration carries and accepts
// only the driver of that run. Without a keepalive from the driver it
// exits.
//
// Its configuration comes from the environment variable GCEFLEET_BIGMACHINE,
// as the local system sets it.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/system/local"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	env, ok := os.LookupEnv(bigmachine.EnvConfig)
	if !ok {
		fmt.Fprintf(os.Stderr, "gceboot: %s is not set; gceboot is started by a bigmachine driver, not by hand\n", bigmachine.EnvConfig)
		os.Exit(2)
	}
	cfg, err := bigmachine.DecodeWorkerConfig(env)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gceboot:", err)
		os.Exit(2)
	}
	ln, err := local.New().Listen(cfg.Listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gceboot: listening on %s: %v\n", cfg.Listen, err)
		os.Exit(1)
	}
	log.Info("gceboot serving", "machine", cfg.Name, "addr", ln.Addr().String())
	err = bigmachine.Bootstrap(cfg, ln, log, os.Exit)
	fmt.Fprintln(os.Stderr, "gceboot:", err)
	os.Exit(1)
}
