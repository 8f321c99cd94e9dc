package testutil

import (
	"sync"
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
