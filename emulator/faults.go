package emulator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"time"

	"golang.org/x/time/rate"
	compute "google.golang.org/api/compute/v1"
)

// Fault makes matching API calls slow or fail. Empty selectors match
// everything; Method is a discovery method id such as
// "compute.instances.insert", and a trailing '*' matches by prefix
// ("compute.instances.*").
type Fault struct {
	Project string `json:"project,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Method  string `json:"method,omitempty"`

	// Latency is added to every matching call.
	Latency time.Duration `json:"-"`

	// RateLimit, when positive, allows that many matching calls per second
	// (with a burst of the same size); the rest fail as GCE rate limits do,
	// with 403 rateLimitExceeded, or with RateLimitCode (429) when set.
	RateLimit     float64 `json:"rateLimit,omitempty"`
	RateLimitCode int     `json:"rateLimitCode,omitempty"`

	// ErrorCode, when set (500 or 503; 403 or 429 for rate limits), fails
	// matching calls: the next Count of them when Count is positive,
	// otherwise each with probability ErrorRate (1 when unset).
	ErrorCode int     `json:"errorCode,omitempty"`
	ErrorRate float64 `json:"errorRate,omitempty"`
	Count     int     `json:"count,omitempty"`

	// OperationError, when set, fails matching mutations the way GCE's
	// asynchronous errors do: the call is accepted and answered with an
	// operation, which ends DONE with this error code (such as
	// INTERNAL_ERROR or RESOURCE_NOT_READY) having changed nothing. Count
	// and ErrorRate choose the calls as they do for ErrorCode; reads are
	// not affected.
	OperationError string `json:"operationError,omitempty"`

	limiter *rate.Limiter
	fired   int
}

func (f *Fault) matches(project, zone, method string) bool {
	if f.Project != "" && f.Project != project {
		return false
	}
	if f.Zone != "" && f.Zone != zone {
		return false
	}
	if f.Method == "" {
		return true
	}
	if pre, ok := strings.CutSuffix(f.Method, "*"); ok {
		return strings.HasPrefix(method, pre)
	}
	return f.Method == method
}

func (f *Fault) validate() error {
	switch f.ErrorCode {
	case 0, 403, 429, 500, 502, 503:
	default:
		return fmt.Errorf("errorCode %d: use 500, 502 or 503 for server errors, 403 or 429 for rate limits", f.ErrorCode)
	}
	switch f.RateLimitCode {
	case 0, 403, 429:
	default:
		return fmt.Errorf("rateLimitCode %d: use 403 (GCE's rateLimitExceeded) or 429", f.RateLimitCode)
	}
	if f.ErrorRate < 0 || f.ErrorRate > 1 {
		return fmt.Errorf("errorRate %g: must be between 0 and 1", f.ErrorRate)
	}
	if f.RateLimit < 0 || f.Count < 0 || f.Latency < 0 {
		return fmt.Errorf("rateLimit, count and latency must not be negative")
	}
	if f.ErrorCode != 0 && f.OperationError != "" {
		return fmt.Errorf("errorCode and operationError: a fault fails a call one way; add two faults for both")
	}
	if f.OperationError != "" && !opErrorRE.MatchString(f.OperationError) {
		return fmt.Errorf("operationError %q: give an error code such as INTERNAL_ERROR or RESOURCE_NOT_READY", f.OperationError)
	}
	if f.ErrorCode == 0 && f.OperationError == "" && f.RateLimit == 0 && f.Latency == 0 {
		return fmt.Errorf("the fault does nothing: set latency, rateLimit, errorCode or operationError")
	}
	return nil
}

// AddFault installs a fault; it applies to calls that start after it.
func (e *Emulator) AddFault(f Fault) error {
	if err := f.validate(); err != nil {
		return err
	}
	if f.RateLimit > 0 {
		burst := max(1, int(f.RateLimit))
		f.limiter = rate.NewLimiter(rate.Limit(f.RateLimit), burst)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = append(e.faults, &f)
	return nil
}

// ClearFaults removes every fault, stockout and added latency.
func (e *Emulator) ClearFaults() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = nil
	e.stockout = nil
	e.latency = e.opts.Latency
}

// SetLatency sets how long each phase of operations and boots takes.
func (e *Emulator) SetLatency(l Latency) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.latency = l
}

var opErrorRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// answersWithOperation reports whether a call of the discovery method is a
// mutation that GCE answers with an operation: POSTs that only read (wait,
// listManagedInstances, testIamPermissions) and deletions of operations
// themselves are not.
func answersWithOperation(httpMethod, method string) bool {
	if httpMethod == http.MethodGet || !strings.HasPrefix(method, "compute.") || strings.Contains(method, "Operations.") {
		return false
	}
	return !strings.HasSuffix(method, ".listManagedInstances")
}

// applyFaults sleeps and fails as the installed faults say for one call:
// with an error to answer at once, or (for a mutation) with the error its
// operation is to end with.
func (e *Emulator) applyFaults(ctx context.Context, project, zone, method string, mutation bool) (*apiError, *opError) {
	e.mu.Lock()
	var delay time.Duration
	var fail *apiError
	var opFail *opError
	for _, f := range e.faults {
		if !f.matches(project, zone, method) {
			continue
		}
		delay += f.Latency
		if fail != nil || opFail != nil {
			continue
		}
		if f.limiter != nil && !f.limiter.Allow() {
			code := f.RateLimitCode
			if code == 0 {
				code = http.StatusForbidden
			}
			fail = errRateLimit(code)
			continue
		}
		if f.ErrorCode == 0 && (f.OperationError == "" || !mutation) {
			continue
		}
		fire := false
		switch {
		case f.Count > 0:
			fire = f.fired < f.Count
		case f.ErrorRate > 0:
			fire = rand.Float64() < f.ErrorRate
		default:
			fire = true
		}
		if fire {
			f.fired++
			if f.OperationError != "" {
				opFail = &opError{code: f.OperationError, message: "The operation failed (a fault installed in the emulator).", httpCode: http.StatusInternalServerError}
			} else if f.ErrorCode == http.StatusForbidden || f.ErrorCode == http.StatusTooManyRequests {
				fail = errRateLimit(f.ErrorCode)
			} else {
				fail = errBackend(f.ErrorCode)
			}
		}
	}
	e.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-e.done:
		}
	}
	return fail, opFail
}

// failedOp answers a mutation that a fault fails: with an operation that
// ends DONE with oerr, nothing changed. e.mu is held.
func (e *Emulator) failedOp(c *call, oerr *opError) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	s := globalScope
	switch {
	case c.zone != "":
		s = zoneScope
	case c.region != "":
		s = regionScope
	}
	verb := c.method[strings.LastIndex(c.method, ".")+1:]
	target := apiBase + strings.TrimSuffix(strings.TrimPrefix(c.urlPath, "/compute/v1/"), "/"+verb)
	op := e.newOp(c, s, verb, target, 0)
	e.runOp(op, func() *opError { return oerr })
	return op.api, nil
}

// Stockout makes instance creation fail with ZONE_RESOURCE_POOL_EXHAUSTED in
// a zone, for one machine type or (when MachineType is empty) for all.
type Stockout struct {
	Project     string `json:"project,omitempty"`
	Zone        string `json:"zone"`
	MachineType string `json:"machineType,omitempty"`
	// SpotOnly limits the stockout to Spot instances, as when a zone has
	// no spare capacity but still serves standard ones.
	SpotOnly bool `json:"spotOnly,omitempty"`
}

// AddStockout installs a stockout.
func (e *Emulator) AddStockout(s Stockout) error {
	if zoneRegion(s.Zone) == "" {
		return fmt.Errorf("unknown zone %q", s.Zone)
	}
	if _, ok := findMachineType(s.MachineType); s.MachineType != "" && !ok {
		return fmt.Errorf("unknown machine type %q", s.MachineType)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stockout = append(e.stockout, s)
	return nil
}

// stockedOut says whether zone has no capacity for in. e.mu is held.
func (e *Emulator) stockedOut(project, zone string, in *compute.Instance) bool {
	spot := in.Scheduling != nil && in.Scheduling.ProvisioningModel == "SPOT"
	for _, s := range e.stockout {
		if (s.Project == "" || s.Project == project) && s.Zone == zone && (s.MachineType == "" || s.MachineType == lastSegment(in.MachineType)) && (!s.SpotOnly || spot) {
			return true
		}
	}
	return false
}

// SetQuota sets the limit of a regional quota metric (CPUS, INSTANCES,
// IN_USE_ADDRESSES, DISKS_TOTAL_GB) of a project.
func (e *Emulator) SetQuota(project, region, metric string, limit float64) error {
	if !isRegion(region) {
		return fmt.Errorf("unknown region %q", region)
	}
	if _, ok := defaultQuotas[metric]; !ok {
		return fmt.Errorf("unknown quota metric %q: use CPUS, INSTANCES, IN_USE_ADDRESSES or DISKS_TOTAL_GB", metric)
	}
	if limit < 0 {
		return fmt.Errorf("quota limit %g must not be negative", limit)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.project(project).regions[region].quotas[metric] = limit
	return nil
}

// Preempt preempts a RUNNING spot or preemptible instance as GCE does: it
// records a compute.instances.preempted operation, tells the instance through
// its metadata, and stops it (or deletes it when its termination action is
// DELETE).
func (e *Emulator) Preempt(project, zone, name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.project(project)
	z, ok := p.zones[zone]
	if !ok {
		return fmt.Errorf("unknown zone %q", zone)
	}
	in, ok := z.instances[name]
	if !ok || in.deleting {
		return fmt.Errorf("no instance %s in projects/%s/zones/%s", name, project, zone)
	}
	if in.api.Status != "RUNNING" {
		return fmt.Errorf("instance %s is %s; only a RUNNING instance can be preempted", name, in.api.Status)
	}
	c := &call{p: p, zone: zone, region: zoneRegion(zone), r: &http.Request{URL: newURL()}}
	op := e.doneOp(c, zoneScope, "compute.instances.preempted", in.api.SelfLink, in.api.Id)
	op.api.User = "system"
	op.api.StatusMessage = "Instance was preempted."
	in.preempted = true
	in.metadataChanged()
	e.serialf(in, "emulator: instance preempted\n")
	if in.api.Scheduling != nil && in.api.Scheduling.InstanceTerminationAction == "DELETE" {
		e.beginDelete(p, in, nil)
		return nil
	}
	e.beginStop(in, "TERMINATED", nil)
	return nil
}
