//go:build !linux

package bigmachine

import (
	"os"
	"path/filepath"
)

// newProgram makes a place for an uploaded binary: a file in a private
// temporary directory, removed once the program runs.
func newProgram() (*os.File, string, error) {
	dir, err := os.MkdirTemp("", "bigmachine-")
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(dir, "program")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o700)
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	return f, path, nil
}

// removeProgram removes an uploaded binary and its directory.
func removeProgram(path string) { removeFile(path) }
