package bigmachine_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestWorkerOutputPipe: of a worker's own output pipe (its descriptors
// 1 and 2), the worker holds besides only the read end its output log
// tees from, and that closes on exec, so that no program it starts
// inherits it; its parent keeps the other read end.
func TestWorkerOutputPipe(t *testing.T) {
	ctx := context.Background()
	_, ms, _ := start(t, fastSystem(), 1)
	var pid int
	if err := ms[0].Call(ctx, "Echo.Pid", struct{}{}, &pid); err != nil {
		t.Fatal(err)
	}
	dir := "/proc/" + strconv.Itoa(pid)
	out, err := os.Readlink(dir + "/fd/1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "pipe:") {
		t.Fatalf("the worker's stdout is %s, not its output pipe", out)
	}
	ents, err := os.ReadDir(dir + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	var readers []string
	for _, e := range ents {
		if e.Name() == "1" || e.Name() == "2" {
			continue
		}
		l, err := os.Readlink(dir + "/fd/" + e.Name())
		if err != nil || l != out {
			continue // closed since the listing, or another file
		}
		info, err := os.ReadFile(dir + "/fdinfo/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		var flags int64
		for line := range strings.SplitSeq(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, err = strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				if err != nil {
					t.Fatalf("fdinfo of %s: %v", e.Name(), err)
				}
			}
		}
		const accMode, cloexec = 03, 02000000
		if flags&accMode != 0 /* O_RDONLY */ || flags&cloexec == 0 {
			t.Errorf("descriptor %s of the worker is its output pipe with flags %o: want only the output log's read end, close-on-exec", e.Name(), flags)
		}
		readers = append(readers, e.Name())
	}
	if len(readers) > 1 {
		t.Errorf("the worker holds its output pipe at descriptors %v besides 1 and 2: want one reader at most", readers)
	}
}
