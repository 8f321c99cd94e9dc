package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// A committer runs callers' work in shared transactions: it takes
// whatever work is waiting and has run, a database's own, run it in one
// transaction (SQLite's batches of savepoints in sqlite.go, PostgreSQL's
// pipelines of calls in postgres.go). T is what a caller asks to be run.
type committer[T any] struct {
	queue   chan *work[T]
	closed  chan struct{}
	running sync.WaitGroup
}

// work is one caller's transaction, waiting for the committer.
type work[T any] struct {
	do    T
	done  chan error
	state atomic.Int32 // queued, taken (by the committer) or cancelled
}

const (
	queued = iota
	taken
	cancelled
)

var errClosed = errors.New("store: closed")

// maxBatch bounds how many callers share a transaction, so that one
// batch does not hold the database for long.
const maxBatch = 64

// newCommitter starts a committer that runs batches with run until close.
func newCommitter[T any](run func([]*work[T])) *committer[T] {
	c := &committer[T]{queue: make(chan *work[T], maxBatch), closed: make(chan struct{})}
	c.running.Go(func() { c.commit(run) })
	return c
}

// close stops the committer (and whatever else waits on closed) and
// waits for it.
func (c *committer[T]) close() {
	close(c.closed)
	c.running.Wait()
}

// submit queues do for the committer and waits for its result.
func (c *committer[T]) submit(ctx context.Context, do T) error {
	w := &work[T]{do: do, done: make(chan error, 1)}
	select {
	case c.queue <- w:
	case <-c.closed:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		if w.state.CompareAndSwap(queued, cancelled) {
			return ctx.Err() // the committer will skip it
		}
		// It runs, and writes the caller's variables until it ends.
		// Statements take microseconds; wait for it.
		return <-w.done
	}
}

// commit runs until close: it takes whatever work is waiting and has run
// run it in one transaction.
func (c *committer[T]) commit(run func([]*work[T])) {
	var batch []*work[T]
	for {
		batch = batch[:0]
		select {
		case w := <-c.queue:
			if w.state.CompareAndSwap(queued, taken) {
				batch = append(batch, w)
			}
		case <-c.closed:
			return
		}
	more:
		for len(batch) < maxBatch {
			select {
			case w := <-c.queue:
				if w.state.CompareAndSwap(queued, taken) {
					batch = append(batch, w)
				}
			default:
				break more
			}
		}
		if len(batch) == 0 {
			continue
		}
		run(batch)
	}
}
