package emulator

import (
	"fmt"
	"regexp"
	"time"

	compute "google.golang.org/api/compute/v1"
)

// scope is where an operation lives: a zone, a region or the project.
type scope int

const (
	zoneScope scope = iota
	regionScope
	globalScope
)

// operation is one long-running operation. Its api value is replaced field by
// field under e.mu; done is closed when it reaches DONE.
type operation struct {
	api   *compute.Operation
	done  chan struct{}
	ended time.Time // when it reached DONE
}

type opList struct {
	byName map[string]*operation
}

func newOpList() *opList { return &opList{byName: map[string]*operation{}} }

func (e *Emulator) opsOf(c *call, s scope) *opList {
	switch s {
	case zoneScope:
		return c.p.zones[c.zone].ops
	case regionScope:
		return c.p.regions[c.region].ops
	}
	return c.p.globalOps
}

// newOp records a PENDING operation of type opType on target in the scope of
// the call. e.mu is held.
func (e *Emulator) newOp(c *call, s scope, opType, target string, targetID uint64) *operation {
	now := e.opts.Now()
	name := fmt.Sprintf("operation-%d-%x-%08x-%08x", now.UnixMilli(), newID()>>20, uint32(newID()), uint32(newID()))
	api := &compute.Operation{
		Kind:          "compute#operation",
		Id:            newID(),
		Name:          name,
		OperationType: opType,
		TargetLink:    target,
		TargetId:      targetID,
		Status:        "PENDING",
		User:          "emulator@" + c.p.name + ".iam.gserviceaccount.com",
		Progress:      0,
		InsertTime:    timestamp(now),
	}
	var list *opList
	switch s {
	case zoneScope:
		api.Zone = zoneURL(c.p.name, c.zone)
		api.SelfLink = zonalURL(c.p.name, c.zone, "operations", name)
		list = c.p.zones[c.zone].ops
	case regionScope:
		api.Region = regionURL(c.p.name, c.region)
		api.SelfLink = regionURL(c.p.name, c.region) + "/operations/" + name
		list = c.p.regions[c.region].ops
	default:
		api.SelfLink = globalURL(c.p.name, "operations", name)
		list = c.p.globalOps
	}
	op := &operation{api: api, done: make(chan struct{})}
	list.byName[name] = op
	if c.p.newOps++; c.p.newOps >= pruneEvery {
		c.p.newOps = 0
		e.pruneOps(c.p, now.Add(-e.opts.OperationRetention))
	}
	if id := c.r.URL.Query().Get("requestId"); id != "" {
		c.p.requestIDs[id] = op
	}
	return op
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// replay returns the operation that an earlier call with the same requestId
// started, so that a retried mutation does not act twice. e.mu is held.
func (e *Emulator) replay(c *call) (*operation, error) {
	id := c.r.URL.Query().Get("requestId")
	if id == "" {
		return nil, nil
	}
	if !uuidRE.MatchString(id) || id == "00000000-0000-0000-0000-000000000000" {
		return nil, errInvalidField("requestId", id, "Must be a valid UUID with the exception that zero UUID is not supported (00000000-0000-0000-0000-000000000000).")
	}
	return c.p.requestIDs[id], nil
}

// runOp carries op through RUNNING to DONE on a background goroutine, doing
// work while it is RUNNING. work runs without e.mu held; the error it returns
// becomes the operation's error.
func (e *Emulator) runOp(op *operation, work func() *opError) {
	e.goBackground(func() {
		lat := e.currentLatency()
		if !e.sleep(lat.Pending) {
			e.finishOp(op, &opError{code: "ABORTED", message: "The emulator shut down.", httpCode: 503})
			return
		}
		e.mu.Lock()
		op.api.Status = "RUNNING"
		op.api.StartTime = timestamp(e.opts.Now())
		e.mu.Unlock()
		err := work()
		if !e.sleep(lat.Running) && err == nil {
			err = &opError{code: "ABORTED", message: "The emulator shut down.", httpCode: 503}
		}
		e.finishOp(op, err)
	})
}

// finishOp marks op DONE with err (nil for success).
func (e *Emulator) finishOp(op *operation, err *opError) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if op.api.Status == "DONE" {
		return
	}
	now := timestamp(e.opts.Now())
	if op.api.StartTime == "" {
		op.api.StartTime = now
	}
	op.api.Status = "DONE"
	op.api.Progress = 100
	op.api.EndTime = now
	op.ended = e.opts.Now()
	if err != nil {
		op.api.Error = &compute.OperationError{Errors: []*compute.OperationErrorErrors{{
			Code:         err.code,
			Message:      err.message,
			ErrorDetails: err.details,
		}}}
		op.api.HttpErrorStatusCode = err.httpCode
		op.api.HttpErrorMessage = httpStatusText(err.httpCode)
	}
	close(op.done)
}

// doneOp records an operation that is already DONE, for changes that take
// effect at once (labels, metadata) and for events GCE records as
// operations (preemption). e.mu is held.
func (e *Emulator) doneOp(c *call, s scope, opType, target string, targetID uint64) *operation {
	op := e.newOp(c, s, opType, target, targetID)
	now := timestamp(e.opts.Now())
	op.api.Status = "DONE"
	op.api.Progress = 100
	op.api.StartTime = now
	op.api.EndTime = now
	op.ended = e.opts.Now()
	close(op.done)
	return op
}

// pruneEvery is how many new operations of a project trigger pruning.
const pruneEvery = 256

// pruneOps forgets p's operations that were DONE before cutoff, and their
// requestIds. e.mu is held.
func (e *Emulator) pruneOps(p *project, cutoff time.Time) {
	old := func(op *operation) bool { return !op.ended.IsZero() && op.ended.Before(cutoff) }
	lists := []*opList{p.globalOps}
	for _, z := range p.zones {
		lists = append(lists, z.ops)
	}
	for _, r := range p.regions {
		lists = append(lists, r.ops)
	}
	for _, l := range lists {
		for name, op := range l.byName {
			if old(op) {
				delete(l.byName, name)
			}
		}
	}
	for id, op := range p.requestIDs {
		if old(op) {
			delete(p.requestIDs, id)
		}
	}
}

func (e *Emulator) getOp(s scope) handlerFunc {
	return func(c *call) (any, error) {
		return e.ops(c, s, opPath(c)).serveGet(c.param("name"))
	}
}

// waitOp answers when the operation is DONE or the wait bound passes,
// whichever comes first, as GCE's operations.wait does. It runs unlocked.
func (e *Emulator) waitOp(s scope) handlerFunc {
	return func(c *call) (any, error) {
		e.mu.Lock()
		op, ok := e.opsOf(c, s).byName[c.param("name")]
		e.mu.Unlock()
		if !ok {
			return nil, errNotFound(trimAPIPrefix(c.urlPath))
		}
		t := time.NewTimer(e.opts.OperationWaitTimeout)
		defer t.Stop()
		select {
		case <-op.done:
		case <-t.C:
		case <-c.r.Context().Done():
		case <-e.done:
		}
		e.mu.Lock()
		snapshot := *op.api
		e.mu.Unlock()
		return &snapshot, nil
	}
}

func (e *Emulator) listOps(s scope) handlerFunc {
	return func(c *call) (any, error) {
		return e.ops(c, s, trimAPIPrefix(c.urlPath)).serveList(c.r)
	}
}

func (e *Emulator) deleteOp(s scope) handlerFunc {
	return func(c *call) (any, error) {
		ops := e.ops(c, s, opPath(c))
		if _, err := ops.get(c.param("name")); err != nil {
			return nil, err
		}
		delete(ops.items, c.param("name"))
		return struct{}{}, nil
	}
}

func (e *Emulator) currentLatency() Latency {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.latency
}
