//go:build unix

package netcap

import (
	"math"
	"syscall"
)

// descriptorLimit returns the process's soft RLIMIT_NOFILE.
func descriptorLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur == 0 {
		return 4096
	}
	return int(min(r.Cur, math.MaxInt32))
}
