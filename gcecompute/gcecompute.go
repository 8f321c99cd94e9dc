// Package gcecompute is a thin layer over the Compute Engine client
// (cloud.google.com/go/compute/apiv1): errors sorted into classes a caller
// can act on, retries under one requestId, operations waited on until DONE
// with their errors checked, and a count of the API calls made.
package gcecompute

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	computeapi "cloud.google.com/go/compute/apiv1"
	"cloud.google.com/go/compute/apiv1/computepb"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"
)

// Class is what an error means for the caller.
type Class int

const (
	// Other is any error that fits no class below.
	Other Class = iota
	// Transient errors (5xx, broken connections) go away on retry.
	Transient
	// RateLimited calls are retried after a backoff.
	RateLimited
	// Quota: the project or region has no room (QUOTA_EXCEEDED).
	Quota
	// Stockout: the zone has no capacity (ZONE_RESOURCE_POOL_EXHAUSTED).
	Stockout
	// NotFound: the resource does not exist.
	NotFound
	// Exists: the resource exists already.
	Exists
	// Denied: the caller lacks a permission.
	Denied
	// Invalid: the request is wrong and will stay wrong.
	Invalid
)

func (c Class) String() string {
	return [...]string{"other", "transient", "rate limited", "quota exceeded", "stockout", "not found", "already exists", "permission denied", "invalid"}[c]
}

// Classify returns the class of err, from an API call or an operation.
func Classify(err error) Class {
	if err == nil {
		return Other
	}
	var oe *OpError
	if errors.As(err, &oe) {
		return oe.Class()
	}
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return Other
		}
		// No HTTP answer at all: the connection broke.
		return Transient
	}
	reasons := ""
	for _, e := range ge.Errors {
		reasons += " " + e.Reason
	}
	switch {
	case ge.Code == http.StatusTooManyRequests || strings.Contains(reasons, "RateLimitExceeded") || strings.Contains(reasons, "rateLimitExceeded"):
		return RateLimited
	case ge.Code >= 500:
		return Transient
	case ge.Code == http.StatusNotFound:
		return NotFound
	case ge.Code == http.StatusConflict:
		return Exists
	case strings.Contains(ge.Message, "QUOTA_EXCEEDED") || strings.Contains(reasons, "quotaExceeded"):
		return Quota
	case strings.Contains(ge.Message, "ZONE_RESOURCE_POOL_EXHAUSTED"):
		return Stockout
	case ge.Code == http.StatusForbidden || ge.Code == http.StatusUnauthorized:
		return Denied
	case ge.Code == http.StatusBadRequest:
		return Invalid
	}
	return Other
}

// OpError is a failed operation: what GCE put in operation.error.errors[].
type OpError struct {
	Op     string // operation type and target
	Codes  []string
	Errors []string
}

func (e *OpError) Error() string {
	var parts []string
	for i, c := range e.Codes {
		parts = append(parts, c+": "+e.Errors[i])
	}
	return e.Op + " failed: " + strings.Join(parts, "; ")
}

// Class classifies the operation's first error code.
func (e *OpError) Class() Class {
	for _, c := range e.Codes {
		switch {
		case c == "QUOTA_EXCEEDED":
			return Quota
		case strings.HasPrefix(c, "ZONE_RESOURCE_POOL_EXHAUSTED"):
			return Stockout
		case c == "RESOURCE_NOT_FOUND":
			return NotFound
		case c == "RESOURCE_ALREADY_EXISTS":
			return Exists
		case c == "RATE_LIMIT_EXCEEDED":
			return RateLimited
		}
	}
	return Other
}

// Retry calls f until it succeeds, fails with an error that retrying
// cannot fix, or ctx ends. Rate limits and transient errors are retried
// with exponential backoff; f must reuse its request (and so its
// requestId) on each call, so that a retried mutation happens once.
func Retry(ctx context.Context, f func() error) error {
	backoff := 100 * time.Millisecond
	start := time.Now()
	for {
		err := f()
		switch Classify(err) {
		case Transient, RateLimited:
		default:
			return err
		}
		if time.Since(start) > RetryFor {
			return fmt.Errorf("%w (gave up after retrying for %v)", err, RetryFor)
		}
		// Say so once the retrying takes long enough to be noticed.
		if log, ok := ctx.Value(retryLogKey{}).(*slog.Logger); ok && time.Since(start) >= time.Second {
			log.Warn("Compute call failing; retrying", "err", err, "in", backoff, "for", time.Since(start).Round(time.Millisecond), "gives_up_after", RetryFor)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up retrying: %v)", err, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// All reads every item of a Cloud Client Library list iterator (it pages
// as it goes).
func All[T any](it interface{ Next() (T, error) }) ([]T, error) {
	var out []T
	for {
		v, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, v)
	}
}

type retryLogKey struct{}

// WithRetryLog returns ctx with log, where Retry reports retries that go
// on for more than a second: what fails, and when it tries again.
func WithRetryLog(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, retryLogKey{}, log)
}

// RetryFor is how long Retry keeps trying before it reports the error: a
// rate limit or an outage longer than this is news for the caller.
const RetryFor = time.Minute

// Client holds the Compute Engine clients gcefleet uses, over one HTTP
// client that counts the calls.
type Client struct {
	Instances    *computeapi.InstancesClient
	Templates    *computeapi.InstanceTemplatesClient
	Groups       *computeapi.InstanceGroupManagersClient
	Firewalls    *computeapi.FirewallsClient
	MachineTypes *computeapi.MachineTypesClient
	ZoneOps      *computeapi.ZoneOperationsClient
	GlobalOps    *computeapi.GlobalOperationsClient

	calls   atomic.Int64
	metrics *prometheus.CounterVec
}

// NewClient returns clients for endpoint: empty means real Compute Engine
// with Application Default Credentials; otherwise a base URL such as
// http://127.0.0.1:8780 (the emulator), reached without credentials.
func NewClient(ctx context.Context, endpoint string, opts ...option.ClientOption) (*Client, error) {
	if err := CheckEndpoint(endpoint); err != nil {
		return nil, err
	}
	if endpoint != "" {
		opts = append([]option.ClientOption{option.WithEndpoint(endpoint), option.WithoutAuthentication()}, opts...)
	} else {
		opts = append([]option.ClientOption{option.WithScopes("https://www.googleapis.com/auth/compute")}, opts...)
	}
	hc, _, err := htransport.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("compute credentials: %w; run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS", err)
	}
	c := &Client{metrics: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gcefleet_compute_calls_total",
		Help: "Compute Engine API calls by method (collection.verb) and HTTP status (or error).",
	}, []string{"method", "code"})}
	hc.Transport = &counting{rt: hc.Transport, n: &c.calls, m: c.metrics}
	opts = append(opts, option.WithHTTPClient(hc))
	if c.Instances, err = computeapi.NewInstancesRESTClient(ctx, opts...); err != nil {
		return nil, err
	}
	if c.Templates, err = computeapi.NewInstanceTemplatesRESTClient(ctx, opts...); err != nil {
		return nil, err
	}
	if c.Groups, err = computeapi.NewInstanceGroupManagersRESTClient(ctx, opts...); err != nil {
		return nil, err
	}
	if c.Firewalls, err = computeapi.NewFirewallsRESTClient(ctx, opts...); err != nil {
		return nil, err
	}
	if c.MachineTypes, err = computeapi.NewMachineTypesRESTClient(ctx, opts...); err != nil {
		return nil, err
	}
	if c.ZoneOps, err = computeapi.NewZoneOperationsRESTClient(ctx, opts...); err != nil {
		return nil, err
	}
	if c.GlobalOps, err = computeapi.NewGlobalOperationsRESTClient(ctx, opts...); err != nil {
		return nil, err
	}
	return c, nil
}

// CheckEndpoint reports whether endpoint can be a Compute API base URL:
// empty (real Compute Engine), or http(s)://HOST[:PORT] with no path, since
// the clients add /compute/v1/ themselves. The discovery-based clients'
// endpoint (ending in /compute/v1/) is the common mistake, and is named.
func CheckEndpoint(endpoint string) error {
	if endpoint == "" {
		return nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("compute endpoint %q is not a base URL: write http://HOST:PORT, such as http://127.0.0.1:8780 (the emulator), or leave it empty for Compute Engine", endpoint)
	}
	if p := strings.TrimSuffix(u.Path, "/"); p != "" {
		base := (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
		if strings.HasSuffix(p, "/compute/v1") {
			return fmt.Errorf("compute endpoint %q is the discovery clients' URL: write its base, %s (the clients add /compute/v1/ themselves)", endpoint, base)
		}
		return fmt.Errorf("compute endpoint %q has a path: write only its base, such as %s", endpoint, base)
	}
	return nil
}

// Calls returns how many Compute API calls the client has made.
func (c *Client) Calls() int64 { return c.calls.Load() }

// Register adds the client's call counts by method and result to reg.
func (c *Client) Register(reg prometheus.Registerer) error { return reg.Register(c.metrics) }

// Close releases the clients.
func (c *Client) Close() error {
	return errors.Join(c.Instances.Close(), c.Templates.Close(), c.Groups.Close(), c.Firewalls.Close(), c.MachineTypes.Close(), c.ZoneOps.Close(), c.GlobalOps.Close())
}

type counting struct {
	rt http.RoundTripper
	n  *atomic.Int64
	m  *prometheus.CounterVec
}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	resp, err := c.rt.RoundTrip(r)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	c.m.WithLabelValues(methodOf(r.Method, r.URL.Path), code).Inc()
	return resp, err
}

// methodOf names the API method of a REST call as collection.verb, such
// as instanceGroupManagers.deleteInstances or instances.get.
func methodOf(httpMethod, path string) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	i := slices.Index(segs, "projects")
	if i < 0 || i+2 > len(segs) {
		return "other"
	}
	rest := segs[i+2:]
	switch {
	case len(rest) > 0 && (rest[0] == "global" || rest[0] == "aggregated"):
		if rest[0] == "aggregated" && len(rest) > 1 {
			return "aggregated." + rest[1]
		}
		rest = rest[1:]
	case len(rest) > 2 && (rest[0] == "zones" || rest[0] == "regions"):
		rest = rest[2:]
	}
	if len(rest) == 0 {
		return "projects.get"
	}
	verb := ""
	switch len(rest) {
	case 1:
		verb = map[string]string{"GET": "list", "POST": "insert"}[httpMethod]
	case 2:
		verb = map[string]string{"GET": "get", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}[httpMethod]
	default:
		verb = rest[len(rest)-1]
	}
	if verb == "" {
		verb = strings.ToLower(httpMethod)
	}
	return rest[0] + "." + verb
}

// DeleteInstances deletes the named instances of zone, at most 32 at a
// time, each under its own requestId, without waiting for the deletions to
// finish; one already gone is no error. It checks no labels: that an
// instance is the caller's to delete is the caller's to know.
func (c *Client) DeleteInstances(ctx context.Context, project, zone string, names []string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	sem := make(chan struct{}, 32)
	for i, name := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			r := &computepb.DeleteInstanceRequest{Project: project, Zone: zone, Instance: name, RequestId: new(RequestID())}
			err := Retry(ctx, func() error {
				_, err := c.Instances.Delete(ctx, r)
				return err
			})
			if err != nil && Classify(err) != NotFound {
				errs[i] = fmt.Errorf("deleting %s: %w", name, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Wait waits for op to be DONE, with zoneOperations.wait or
// globalOperations.wait (which block on the server side rather than poll),
// and returns an *OpError if it failed.
func (c *Client) Wait(ctx context.Context, project string, op *computeapi.Operation) error {
	p := op.Proto()
	for p.GetStatus() != computepb.Operation_DONE {
		var err error
		if zone := p.GetZone(); zone != "" {
			err = Retry(ctx, func() error {
				var werr error
				p, werr = c.ZoneOps.Wait(ctx, &computepb.WaitZoneOperationRequest{Project: project, Zone: LastSegment(zone), Operation: p.GetName()})
				return werr
			})
		} else {
			err = Retry(ctx, func() error {
				var werr error
				p, werr = c.GlobalOps.Wait(ctx, &computepb.WaitGlobalOperationRequest{Project: project, Operation: p.GetName()})
				return werr
			})
		}
		if err != nil {
			return fmt.Errorf("waiting for operation %s: %w", op.Name(), err)
		}
	}
	return OperationError(p)
}

// OperationError returns the error a DONE operation carries, or nil.
func OperationError(p *computepb.Operation) error {
	if p.GetError() == nil || len(p.GetError().GetErrors()) == 0 {
		return nil
	}
	oe := &OpError{Op: p.GetOperationType() + " " + LastSegment(p.GetTargetLink())}
	for _, e := range p.GetError().GetErrors() {
		oe.Codes = append(oe.Codes, e.GetCode())
		oe.Errors = append(oe.Errors, e.GetMessage())
	}
	return oe
}

// LastSegment returns what follows the last slash of a resource URL: the
// zone of a zone URL, the name of a resource.
func LastSegment(s string) string { return s[strings.LastIndexByte(s, '/')+1:] }

// RequestID returns a new random UUID for a mutation's requestId: GCE
// answers a retry under the same id with the first call's operation, so a
// retried mutation happens once.
func RequestID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
