package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds and fails the test after 10 seconds.
// It is for state that converges asynchronously by design, as Compute
// Engine's does, where there is no event to wait on.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitWithin is WaitFor with its own limit, for convergence that takes
// many steps (a fleet of groups through injected faults).
func WaitWithin(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
