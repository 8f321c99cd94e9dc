package store_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/gcefleet/gcefleet/store"
)

// TestSQLiteFilesArePrivate: the database holds the provider's claim key
// and the fleet's CA key, so its file and the -wal and -shm files SQLite
// makes beside it are the user's alone, whether the file is new or was
// made readable by others before (a umask of 022, an older gcefleet).
func TestSQLiteFilesArePrivate(t *testing.T) {
	for _, c := range []struct {
		name    string
		premade os.FileMode // 0: no file before Open
	}{
		{"new file", 0},
		{"a file others could read", 0o644},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "gcefleet.db")
			if c.premade != 0 {
				if err := os.WriteFile(path, nil, c.premade); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, c.premade); err != nil {
					t.Fatal(err)
				}
			}
			ctx := context.Background()
			s, err := store.Open(ctx, "sqlite:"+path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Put(ctx, "k", "secret", store.Fence{}); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{path, path + "-wal", path + "-shm"} {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatalf("%s: %v", filepath.Base(p), err)
				}
				if perm := fi.Mode().Perm(); perm&0o077 != 0 {
					t.Errorf("%s has mode %04o: others can read the provider's keys", filepath.Base(p), perm)
				}
			}
		})
	}
}
