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
	return versionsMissing(f)
}

// versionsMissing reports a symbol version the binary needs from a library
// that this machine's copy of it does not define: a driver built against a
// newer C library than the machine's. It speaks only when it finds the
// library and knows: a library it cannot find is the loader's to look for.
func versionsMissing(f *elf.File) error {
	needs, err := f.DynamicVersionNeeds()
	if err != nil {
		return nil
	}
	for _, need := range needs {
		lib := findLibrary(need.Name)
		if lib == nil {
			continue
		}
		defs, err := lib.DynamicVersions()
		lib.Close()
		if err != nil {
			continue
		}
		have := map[string]bool{}
		for _, d := range defs {
			have[d.Name] = true
		}
		for _, dep := range need.Needs {
			if !have[dep.Dep] {
				return fmt.Errorf("the binary needs %s from %s, which this machine's does not have (its C library is older than the one the driver was built with): build the driver with CGO_ENABLED=0, or boot machines from an image with a newer C library", dep.Dep, need.Name)
			}
		}
	}
	return nil
}

// findLibrary opens the library named name (such as "libc.so.6") where the
// loader would find it on common distributions (Debian's multiarch
// directories, then the others), or returns nil.
func findLibrary(name string) *elf.File {
	for _, dir := range []string{
		"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
		"/lib64", "/usr/lib64", "/lib", "/usr/lib",
	} {
		if f, err := elf.Open(dir + "/" + name); err == nil {
			return f
		}
	}
	return nil
}
