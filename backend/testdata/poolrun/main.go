// Command poolrun is a stand-in for a driver's program on a pool machine,
// for the backend's tests: it leaves a process behind that its parent no
// longer knows (as a daemon does), prints both pids, and serves the run's
// bootstrap with the machine's run certificate on the run's address.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/system/gce/instance"
)

func main() {
	cfg, ok, err := bigmachine.ReadWorkerConfig()
	if !ok || err != nil {
		fmt.Fprintln(os.Stderr, "poolrun: no worker configuration:", err)
		os.Exit(2)
	}
	// The shell exits at once: its sleep is an orphan.
	out, err := exec.Command("/bin/sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "poolrun: leaving an orphan:", err)
		os.Exit(2)
	}
	fmt.Printf("poolrun %s pid=%d orphan=%s", cfg.Name, os.Getpid(), out)
	ln, err := instance.Listen(cfg.Listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "poolrun:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	fmt.Fprintln(os.Stderr, "poolrun:", bigmachine.Bootstrap(cfg, ln, log, os.Exit))
	os.Exit(1)
}
