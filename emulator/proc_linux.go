package emulator

import (
	"os"
	"syscall"
)

// procAttr puts a container process in its own process group, so that
// stopping it reaches its children, and has the kernel kill it if the
// emulator dies, so that no orphan outlives the emulator.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func signalGroup(p *os.Process, sig syscall.Signal) {
	if err := syscall.Kill(-p.Pid, sig); err != nil {
		p.Signal(sig)
	}
}
