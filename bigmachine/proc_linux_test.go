package bigmachine_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/system/local"
)

// TestNoSecretInProc reads /proc/PID/environ and /proc/PID/cmdline of every
// worker process, started directly and exec'd by the gceboot bootstrap
// after an upload (whose own start is the direct case's): none may
// hold a worker configuration or key material, which any process of the
// same user (and root) can read there for as long as the worker runs.
func TestNoSecretInProc(t *testing.T) {
	boot := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/cmd/gceboot")
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		sys    *local.System
		execed bool
	}{
		{"direct", fastSystem(), false},
		{"uploaded and exec'd", fastSystem(local.WithBootstrap(boot)), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ms, _ := start(t, tc.sys, 2)
			for _, m := range ms {
				var pid int
				if err := m.Call(ctx, "Echo.Pid", struct{}{}, &pid); err != nil {
					t.Fatal(err)
				}
				if tc.execed {
					exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
					if err != nil || !strings.HasPrefix(exe, "/memfd:bigmachine-program") {
						t.Fatalf("machine %s runs %q (%v), not the uploaded binary", m.Name(), exe, err)
					}
				}
				for _, f := range []string{"environ", "cmdline"} {
					b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + f)
					if err != nil {
						t.Fatal(err)
					}
					if why := secretIn(b); why != "" {
						t.Errorf("/proc/%d/%s of machine %s %s", pid, f, m.Name(), why)
					}
				}
			}
		})
	}
}

// secretIn says what of a worker's secrets the NUL-separated strings of
// b hold, or "" if none.
func secretIn(b []byte) string {
	for _, s := range bytes.Split(b, []byte{0}) {
		k, v, _ := strings.Cut(string(s), "=")
		for _, x := range []string{string(s), v} {
			if _, err := bigmachine.DecodeWorkerConfig(x); err == nil {
				return "holds a worker configuration"
			}
			if strings.Contains(x, "PRIVATE KEY") {
				return "holds a PEM private key"
			}
			if d, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(x, "=")); err == nil && (bytes.Contains(d, []byte(`"key"`)) || bytes.Contains(d, []byte("PRIVATE KEY"))) {
				return "holds encoded key material"
			}
		}
		if k == bigmachine.EnvConfig {
			if _, err := strconv.Atoi(v); err != nil {
				return "holds " + bigmachine.EnvConfig + " with more than a descriptor number"
			}
		}
	}
	return ""
}
