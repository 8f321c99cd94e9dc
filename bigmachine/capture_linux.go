package bigmachine

import (
	"io"
	"os"
	"syscall"
)

// captureOutput routes this process's stdout and stderr through a pipe, so
// that what the program writes is both kept in l and still written where
// it went before.
func captureOutput(l *outputLog) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	orig, err := syscall.Dup(1)
	if err != nil {
		return err
	}
	syscall.CloseOnExec(orig)
	for _, fd := range []int{1, 2} {
		if err := syscall.Dup3(int(w.Fd()), fd, 0); err != nil {
			return err
		}
	}
	w.Close()
	go io.Copy(io.MultiWriter(os.NewFile(uintptr(orig), "stdout"), l), r)
	return nil
}
