package bigmachine

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// newProgram makes a place for an uploaded binary: on Linux an anonymous
// memory file, exec'd through /proc/self/fd, so the binary never touches
// the disk and nothing of it outlives the processes that use it.
func newProgram() (*os.File, string, error) {
	// No MFD_CLOEXEC: the exec'd program inherits the descriptor, and
	// closes it as it starts.
	fd, err := unix.MemfdCreate("bigmachine-program", 0)
	if err != nil {
		return nil, "", fmt.Errorf("memfd_create: %w", err)
	}
	return os.NewFile(uintptr(fd), "bigmachine-program"), "/proc/self/fd/" + strconv.Itoa(fd), nil
}

// removeProgram lets go of an uploaded binary by its path, in the
// process that made it or in the one that exec'd it.
func removeProgram(path string) {
	if fd, ok := strings.CutPrefix(path, "/proc/self/fd/"); ok {
		if n, err := strconv.Atoi(fd); err == nil {
			unix.Close(n)
		}
		return
	}
	removeFile(path)
}
