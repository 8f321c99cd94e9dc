//go:build !linux

package bigmachine

import (
	"errors"
	"syscall"
	"time"
)

// becomeSubreaper is Linux's: elsewhere a bootstrap cannot supervise.
func becomeSubreaper() error {
	return errors.New("a supervising bootstrap needs Linux (a child subreaper and /proc)")
}

func runAttr(BootOptions) *syscall.SysProcAttr { return nil }

func reapUntil(pid int) int {
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		return 1
	}
	return exitCode(ws)
}

func killDescendants(time.Duration) (int, error) {
	return 0, errors.New("a supervising bootstrap needs Linux")
}
