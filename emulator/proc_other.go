//go:build !linux

package emulator

import (
	"os"
	"syscall"
)

// procAttr puts a container process in its own process group, so that
// stopping it reaches its children. Outside Linux there is no parent-death
// signal: Close must run for the processes to stop.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func signalGroup(p *os.Process, sig syscall.Signal) {
	if err := syscall.Kill(-p.Pid, sig); err != nil {
		p.Signal(sig)
	}
}
