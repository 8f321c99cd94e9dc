//go:build !linux

package bigmachine

// captureOutput does nothing where the descriptors cannot be redirected;
// Supervisor.Tail then streams nothing.
func captureOutput(l *outputLog) error { return nil }
