package testutil

import (
	"errors"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Within runs f and fails the test, naming what it waited for, if f has
// not returned after d: a wait that hangs fails rather than holding the
// test binary until go test's own timeout.
func Within(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// Wait waits for wg for at most a minute, failing the test otherwise.
func Wait(t testing.TB, what string, wg *sync.WaitGroup) {
	t.Helper()
	Within(t, time.Minute, what, wg.Wait)
}

// WaitKilled waits, for at most d, for cmd, which the test killed with
// SIGKILL, to be reaped, and fails the test if it is not by then or if it
// ended some other way. Its output must be closed too: a child that keeps
// it open holds the wait.
func WaitKilled(t testing.TB, cmd *exec.Cmd, d time.Duration, what string) {
	t.Helper()
	var err error
	Within(t, d, what+" to be reaped after SIGKILL", func() { err = cmd.Wait() })
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("%s ended with %v, want it killed by SIGKILL", what, err)
	}
}

// Receive returns the next value from ch, failing the test, naming what it
// waited for, if none comes within d.
func Receive[T any](t testing.TB, d time.Duration, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		panic("unreachable")
	}
}
