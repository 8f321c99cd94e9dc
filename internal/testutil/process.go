package testutil

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StartProcess starts name with args and the test's environment plus env,
// and returns it with a reader of its standard output. Its standard error
// is shown if the test fails; the process is killed when the test ends.
func StartProcess(t testing.TB, env []string, name string, args ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	stderr := &SyncBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s %s wrote:\n%s", name, strings.Join(args, " "), stderr)
		}
	})
	return cmd, bufio.NewReader(out)
}

// Alive reports whether process pid runs. A zombie, dead but not yet
// reaped by its parent, is not alive.
func Alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

// WaitGone waits until process pid is no longer alive, and fails the test
// (killing the process) if it still runs after within.
func WaitGone(t testing.TB, pid int, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for Alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("%s (process %d) still runs after %v", what, pid, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
