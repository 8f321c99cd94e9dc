package bigmachine

import (
	"context"
	"io"
	"sync"
)

// outputLog keeps the last of what a worker writes to its stdout and
// stderr, for drivers that tail it over RPC (Supervisor.Tail) rather than
// through their system.
type outputLog struct {
	mu      sync.Mutex
	buf     []byte
	start   int64         // offset of buf[0] in the whole output
	changed chan struct{} // closed and replaced on every write
}

// outputKeep is how much output a worker keeps for a late reader.
const outputKeep = 1 << 20

func newOutputLog() *outputLog { return &outputLog{changed: make(chan struct{})} }

func (l *outputLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - outputKeep; over > 0 {
		l.buf = append(l.buf[:0], l.buf[over:]...)
		l.start += int64(over)
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// reader streams the output from offset on, waiting for more, until ctx
// ends.
func (l *outputLog) reader(ctx context.Context, offset int64) io.ReadCloser {
	return &outputReader{l: l, ctx: ctx, off: offset}
}

type outputReader struct {
	l   *outputLog
	ctx context.Context
	off int64
}

func (r *outputReader) Read(p []byte) (int, error) {
	for {
		r.l.mu.Lock()
		if r.off < r.l.start {
			r.off = r.l.start // what was dropped is gone
		}
		avail := r.l.buf[r.off-r.l.start:]
		changed := r.l.changed
		if len(avail) > 0 {
			n := copy(p, avail)
			r.off += int64(n)
			r.l.mu.Unlock()
			return n, nil
		}
		r.l.mu.Unlock()
		select {
		case <-changed:
		case <-r.ctx.Done():
			return 0, io.EOF
		}
	}
}

func (r *outputReader) Close() error { return nil }
