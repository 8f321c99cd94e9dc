package store_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/gcefleet/gcefleet/store"
)

// TestSQLiteFileIsPrivate: the database file, and its -wal and -shm, are
// readable by their owner only, whatever the umask, and an existing file
// readable by others is made private: it holds the provider's claim key
// and the fleet CA's key.
func TestSQLiteFileIsPrivate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fresh, loose := filepath.Join(dir, "fresh.db"), filepath.Join(dir, "loose.db")
	if err := os.WriteFile(loose, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, db := range []string{fresh, loose} {
		st, err := store.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Put(ctx, "k", "v", store.Fence{}); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{db, db + "-wal", db + "-shm"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s has mode %v: others may read the provider's keys", p, fi.Mode().Perm())
			}
		}
		st.Close()
	}
}
