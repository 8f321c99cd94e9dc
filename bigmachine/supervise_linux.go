package bigmachine

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// becomeSubreaper makes this process the reaper of its orphaned
// descendants, so that a program that daemonizes (forks and lets its
// parent exit) stays this process's descendant, to be killed with it.
func becomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	return nil
}

// runAttr is how a supervised program starts: killed if the bootstrap
// dies, and as an unprivileged user when the bootstrap is root. It stays
// in the bootstrap's process group, so that what ends the instance's
// processes as a group (the emulator; on Compute Engine the container's
// end takes them all anyway) ends the run too.
func runAttr(opts BootOptions) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		uid, gid := opts.RunUID, opts.RunGID
		if uid == 0 {
			uid = 65534
		}
		if gid == 0 {
			gid = 65534
		}
		attr.Credential = &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: false, Groups: []uint32{}}
	}
	return attr
}

// reapUntil reaps this process's children (the supervised program, and
// its orphans, which come to this subreaper) until pid exits, and returns
// pid's exit code; it goes on reaping in the background after.
func reapUntil(pid int) int {
	code := make(chan int, 1)
	go func() {
		found := false
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(-1, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				if !found {
					code <- 1
				}
				// No child left: the next orphan (there is none
				// unless a descendant lives) restarts nothing; those
				// killDescendants kills it reaps itself.
				return
			}
			if got == pid && !found {
				found = true
				code <- exitCode(syscall.WaitStatus(ws))
			}
		}
	}()
	return <-code
}

// killDescendants kills every descendant of this process with SIGKILL,
// again and again until none is alive (one that forks as it is killed
// has a child that is killed next round), or until within passes. It
// reaps what it killed and returns how many it killed.
func killDescendants(within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	killed := 0
	for {
		pids, err := descendants(os.Getpid())
		if err != nil {
			return killed, err
		}
		if len(pids) == 0 {
			return killed, nil
		}
		if time.Now().After(deadline) {
			return killed, fmt.Errorf("%d processes are still alive after %v: %v", len(pids), within, pids)
		}
		for _, p := range pids {
			if unix.Kill(p, unix.SIGKILL) == nil {
				killed++
			}
		}
		// Reap the children among them; a reaper may be waiting too.
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if got <= 0 || err != nil {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// descendants returns the live (not zombie) descendants of pid, from
// /proc.
func descendants(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	alive := map[int]bool{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...; comm may hold anything but the
		// last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		pp, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		children[pp] = append(children[pp], p)
		alive[p] = f[0] != "Z" && f[0] != "X"
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if alive[c] {
				out = append(out, c)
			}
			queue = append(queue, c)
		}
	}
	return out, nil
}
