package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
)

// TestBigpiCtrlC: an interrupt while the machines sample says that bigpi
// stops its machines, and exits without the calls' network errors.
func TestBigpiCtrlC(t *testing.T) {
	bin := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/examples/bigpi")
	cmd := exec.Command(bin, "-nmach=2", "-samples=1e14")
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
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
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
	for _, bad := range []string{"network error", "context canceled", "Post \"https://"} {
		if strings.Contains(text, bad) {
			t.Errorf("output shows %q:\n%s", bad, text)
		}
	}
}
