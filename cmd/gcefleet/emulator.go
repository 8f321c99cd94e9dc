package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/netcap"
)

// imageFlag collects repeated --image IMAGE=PATH mappings.
type imageFlag map[string]string

func (f imageFlag) String() string {
	var parts []string
	for k, v := range f {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

// Set takes IMAGE=PATH, or several separated by commas (as the environment
// variable carries them).
func (f imageFlag) Set(s string) error {
	for _, kv := range strings.Split(s, ",") {
		image, path, ok := strings.Cut(kv, "=")
		if !ok || image == "" || path == "" {
			return fmt.Errorf("want IMAGE=PATH, e.g. gcr.io/my-project/gceboot=./gceboot, got %q", kv)
		}
		st, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("image %s: %v", image, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("image %s: %s is not an executable file", image, path)
		}
		f[image] = path
	}
	return nil
}

func emulatorCommand() *command {
	return &command{
		name:      "emulator",
		envPrefix: "GCEFLEET_EMULATOR_",
		envNames:  map[string]string{"image": "GCEFLEET_EMULATOR_IMAGES"},
		// GCEFLEET_IMAGE is bigpi's gceboot image: it is not read here.
		envOld: map[string]string{"listen": "GCEFLEET_LISTEN", "wait-timeout": "GCEFLEET_WAIT_TIMEOUT",
			"stop-grace": "GCEFLEET_STOP_GRACE", "verbose": "GCEFLEET_VERBOSE"},
		summary: "serve a Compute Engine emulator for tests and local development",
		usage:   "[--listen ADDR] [--image IMAGE=PATH]...",
		help: `Serves the Compute Engine v1 REST API on a local address, with instances
whose containers run as local processes. Point a Compute client at it with
only an endpoint option:

  google.golang.org/api/compute/v1:   option.WithEndpoint("http://ADDR/compute/v1/"), option.WithoutAuthentication()
  cloud.google.com/go/compute/apiv1:  option.WithEndpoint("http://ADDR"), option.WithoutAuthentication()

Once it is ready it prints its endpoint, alone on one line of standard output.
Faults (latency, rate limits, 5xx, stockouts, quotas, preemption) are set at
run time through the admin API under /emulator/v1/ (see docs/emulator.md).

Example:
  gcefleet emulator --listen 127.0.0.1:8780 --image gcr.io/my-project/gceboot=$(go env GOPATH)/bin/gceboot
  curl -s -X POST http://127.0.0.1:8780/emulator/v1/faults -d '{"method":"compute.instances.insert","errorCode":503,"count":2}'`,
		flags: func(fs *flag.FlagSet) func(context.Context, *environ, []string) error {
			listen := fs.String("listen", "127.0.0.1:8780", "`address` to serve on (port 0 picks a free one)")
			images := imageFlag{}
			fs.Var(images, "image", "map a container `IMAGE=PATH` to the executable that runs for it; repeat for more")
			waitTimeout := fs.Duration("wait-timeout", 2*time.Minute, "how long operations.wait blocks at most, as GCE's does")
			stopGrace := fs.Duration("stop-grace", 5*time.Second, "time between SIGTERM and SIGKILL when an instance stops")
			verbose := fs.Bool("verbose", false, "log every instance process's output to standard error")
			return func(ctx context.Context, env *environ, args []string) error {
				if len(args) > 0 {
					return usagef("emulator: unexpected arguments %q", args)
				}
				opts := emulator.Options{
					Images:               images,
					OperationWaitTimeout: *waitTimeout,
					StopGrace:            *stopGrace,
					Logger:               slog.New(slog.NewTextHandler(env.stderr, nil)),
				}
				if *verbose {
					opts.ProcessOutput = env.stderr
				}
				return serveEmulator(ctx, env, *listen, opts)
			}
		},
	}
}

func serveEmulator(ctx context.Context, env *environ, listen string, opts emulator.Options) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("emulator: cannot listen on %s: %v (choose another with --listen, or port 0 for any free one)", listen, err)
	}
	emu := emulator.New(opts)
	// Half the process's connections; the instances' metadata servers
	// share the other half. operations.wait may block for its timeout.
	capped := netcap.Listen(ln, netcap.DefaultMax()/2)
	srv := capped.Track(&http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: max(opts.OperationWaitTimeout, 2*time.Minute) + 30*time.Second, IdleTimeout: 2 * time.Minute})
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(capped) }()
	endpoint := "http://" + ln.Addr().String()
	fmt.Fprintln(env.stdout, endpoint)
	fmt.Fprintf(env.stderr, "Compute Engine emulator ready: discovery client endpoint %s/compute/v1/, admin API %s/emulator/v1/. Ctrl-C stops it.\n", endpoint, endpoint)
	select {
	case <-ctx.Done():
	case err := <-errc:
		emu.Close()
		return fmt.Errorf("emulator: %v", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutdownCtx)
	emu.Close()
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
