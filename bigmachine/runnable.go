package bigmachine

import (
	"debug/elf"
	"fmt"
	"io"
	"os"
	"strings"
)

// runnable reports why the binary at path cannot run on this machine, when
// it can tell. A dynamically linked binary (a driver built with cgo, as Go
// builds by default where a C compiler is installed) needs its loader, which
// an image without a C library lacks; exec would fail with a bare "no such
// file or directory", after the bootstrap has stopped serving.
func runnable(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return nil // not ELF: exec will say what is wrong
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return nil
		}
		loader := strings.TrimRight(string(b), "\x00")
		if _, err := os.Stat(loader); err != nil {
			return fmt.Errorf("the binary is dynamically linked and needs %s, which this machine lacks: build the driver with CGO_ENABLED=0, or boot machines from an image with a C library", loader)
		}
	}
	return nil
}
