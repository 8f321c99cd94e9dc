package backend_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
	"github.com/gcefleet/gcefleet/claim"
	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
)

// alive reports whether process pid lives (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// uidOf returns the real uid of process pid.
func uidOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			return f[1]
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return ""
}

// TestPoolRunEndsWithItsLease: a claimed machine serving its run (a
// program that leaves an orphan behind, as a daemon does); once the
// lease is released, the backend retires the machine and the machine
// kills the run's every process, and the old lessee's run certificate
// gets no answer at the run's address, while Compute cannot delete the
// instance.
func TestPoolRunEndsWithItsLease(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs Linux's /proc")
	}
	run := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/backend/testdata/poolrun")
	w := newPoolWorld(t, 10*time.Minute)
	ctx := context.Background()
	w.warm(2, nil)
	l := w.lease(w.alice, "run")
	m := *l.Machine
	ca := newRunCA(t)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sess, err := claim.PresentSession(pctx, m.Connection, m.Hostname, l.Claim, ca.certPEM, ca.sign(m.Hostname))
	if err != nil {
		t.Fatal(err)
	}
	if sess.Control == "" {
		t.Fatalf("the claimed machine named no control server: %+v", sess)
	}
	rc := &rpc.Client{HTTP: ca.client(t, m.Hostname)}
	f, err := os.Open(run)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n int64
	if err := rc.Call(pctx, "https://"+sess.Addr, "Supervisor.Upload", io.Reader(f), &n); err != nil {
		t.Fatalf("uploading the run: %v", err)
	}
	if err := rc.Call(pctx, "https://"+sess.Addr, "Supervisor.Exec", bigmachine.ExecRequest{}, &struct{}{}); err != nil {
		t.Fatalf("exec: %v", err)
	}
	re := regexp.MustCompile(`poolrun ` + regexp.QuoteMeta(m.Hostname) + ` pid=(\d+) orphan=(\d+)`)
	var pids []int
	testutil.WaitWithin(t, 30*time.Second, "the run to start and leave its orphan", func() bool {
		mm := re.FindStringSubmatch(w.out.String())
		if mm == nil {
			return false
		}
		for _, s := range mm[1:] {
			p, err := strconv.Atoi(s)
			if err != nil {
				t.Fatal(err)
			}
			pids = append(pids, p)
		}
		return true
	})
	testutil.WaitWithin(t, 30*time.Second, "the run to serve the run's driver", func() bool {
		return serves(ca.client(t, m.Hostname), sess.Addr) == nil
	})
	for _, p := range pids {
		if !alive(p) {
			t.Fatalf("process %d of the run is not alive before the lease ends", p)
		}
		// gceboot, as root, runs the run as nobody, which cannot kill it.
		if os.Geteuid() == 0 {
			if uid := uidOf(t, p); uid != "65534" {
				t.Errorf("process %d of the run runs as uid %s, want 65534 (gceboot is root)", p, uid)
			}
		}
	}

	// Compute cannot delete the instance: only the machine itself can
	// cut its old lessee off.
	for _, method := range []string{"compute.instanceGroupManagers.deleteInstances", "compute.instances.delete"} {
		if err := w.emu.AddFault(emulator.Fault{Method: method, ErrorCode: 503}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.alice.Release(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitWithin(t, 30*time.Second, "the backend to retire the machine", func() bool {
		return strings.Contains(w.out.String(), "retired by the backend: the lease ended; ending the run")
	})
	testutil.WaitWithin(t, 30*time.Second, fmt.Sprintf("the run's processes %v to be gone", pids), func() bool {
		for _, p := range pids {
			if alive(p) {
				return false
			}
		}
		return true
	})
	if err := serves(ca.client(t, m.Hostname), sess.Addr); err == nil {
		t.Error("the run's address answered the old lessee's run certificate after the lease ended")
	}
	if _, err := w.compute.Instances.Get(ctx, &computepb.GetInstanceRequest{Project: "pool-project", Zone: "us-central1-a", Instance: m.Hostname}); err != nil {
		t.Errorf("the instance: %v; want it still there (Compute could not delete it), for the test to mean anything", err)
	}
	// Retired, the machine takes no claim and no renewal.
	if _, err := claim.PresentSession(pctx, m.Connection, m.Hostname, l.Claim, ca.certPEM, ca.sign(m.Hostname)); err == nil {
		t.Error("the retired machine took a claim")
	}
	if err := claim.Renew(pctx, m.Connection, sess.Control, m.Hostname, l.Claim); err == nil {
		t.Error("the retired machine took a renewal")
	}
}
