//go:build unix

package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/system/pool"
)

// TestBigpiCtrlC: an interrupt while the machines sample says that bigpi
// stops its machines, and exits without the calls' network errors.
func TestBigpiCtrlC(t *testing.T) {
	bin := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/examples/bigpi")
	cmd := exec.Command(bin, "-nmach=2", "-samples=1e14")
	// A group of its own, as a terminal's job: Ctrl-C reaches the driver
	// and its local machines alike.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() }) // a bound on the whole test
	defer timer.Stop()
	var out strings.Builder
	r := bufio.NewReader(stderr)
	for {
		line, err := r.ReadString('\n')
		out.WriteString(line)
		if err != nil {
			t.Fatalf("bigpi ended before its machines ran: %v\n%s", err, out.String())
		}
		if strings.Contains(line, "machines running after") {
			break
		}
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(rest)
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit %d (%v), want 130\n%s", code, err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		"\nbigpi: interrupted; stopping its machines (Ctrl-C again to quit at once)\n",
		"\nbigpi: interrupted; its machines are stopped\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "stopping its machines"); n != 1 {
		t.Errorf("%d processes said they are stopping the machines, want the driver alone:\n%s", n, text)
	}
	for _, bad := range []string{"network error", "context canceled", "Post \"https://"} {
		if strings.Contains(text, bad) {
			t.Errorf("output shows %q:\n%s", bad, text)
		}
	}
}

// TestBigpiHelpNamesEveryVariable: bigpi --help names the environment
// variable of every flag, and the variables set the flags.
func TestBigpiHelpNamesEveryVariable(t *testing.T) {
	bin := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/examples/bigpi")
	out, err := exec.Command(bin, "-help").CombinedOutput()
	if err != nil {
		t.Fatalf("bigpi -help: %v\n%s", err, out)
	}
	flags := 0
	for _, block := range strings.Split(string(out), "\n  -")[1:] {
		flags++
		name, _, _ := strings.Cut(block, " ")
		name, _, _ = strings.Cut(name, "\n")
		want := "BIGPI_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if strings.HasPrefix(name, "gce.") {
			want = "GCEFLEET_" + strings.ToUpper(strings.ReplaceAll(strings.TrimPrefix(name, "gce."), "-", "_"))
		}
		if strings.HasPrefix(name, "pool.") {
			if want = pool.EnvName(name); want == "" {
				t.Errorf("-%s: the pool system names no variable for it", name)
				continue
			}
		}
		if strings.Contains(block, "deprecated") {
			continue
		}
		if !strings.Contains(strings.Join(strings.Fields(block), " "), "env "+want) {
			t.Errorf("-%s: help does not name %s:\n%s", name, want, block)
		}
	}
	if flags < 25 {
		t.Errorf("only %d flags in the help:\n%s", flags, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "BIGPI_NMACH=many")
	out, err = cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), `BIGPI_NMACH="many"`) {
		t.Errorf("BIGPI_NMACH=many: %v\n%s", err, out)
	}
}
