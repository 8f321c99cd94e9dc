// Package client calls the Machine Provider's API: what the CLI, the GCE
// backend and bigmachine's pool system use.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gcefleet/gcefleet/provider/api"
)

// Client calls one provider with one token. It is safe for concurrent use.
type Client struct {
	// BaseURL is the provider's address, such as http://127.0.0.1:8790.
	BaseURL string
	Token   string
	// HTTP makes the requests; if nil, a client shared by every Client
	// that opens at most 64 connections to each provider and keeps them
	// all. A caller holding more long polls than that at once gives its own.
	HTTP *http.Client
}

// maxConns bounds the connections of defaultHTTP to one provider.
const maxConns = 64

// defaultHTTP is the HTTP client of a Client whose HTTP is nil. Go's
// default keeps two idle connections per host, so that callers with more
// requests at once than that (the GCE backend's jobs, a driver's machines)
// would open and close a connection for most of them: 17% more CPU a
// lease+release in bench/provider. MaxIdleConnsPerHost bounds only the idle
// connections: a request that finds none idle dials, and when a connection
// another call frees reaches it first the dial still completes into the
// pool (net/http does not cancel it, golang.org/issue/66442): a burst of
// 32 callers opened 33 to 62 connections, 100 callers 100. MaxConnsPerHost
// bounds them all, dialing ones included, and at the idle bound none is
// closed for want of room in the pool.
var defaultHTTP = &http.Client{Transport: func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = maxConns
	t.MaxConnsPerHost = maxConns
	return t
}()}

// ErrUnreachable reports that nothing answered at the provider's address:
// no server listens there, or the name does not resolve.
var ErrUnreachable = errors.New("not answering")

// Error is an error answer of the API.
type Error struct {
	Status  int               `json:"-"`
	Code    string            `json:"code"`
	Message string            `json:"message"`
	Fields  map[string]string `json:"fields,omitempty"`
}

func (e *Error) Error() string {
	if e.Status == 0 { // one result of a batch
		return "provider: " + e.Message
	}
	return fmt.Sprintf("provider: %s (HTTP %d)", e.Message, e.Status)
}

// Is lets errors.Is match an answer with the API's error of its code
// (see api.Codes), such as api.ErrNotFound.
func (e *Error) Is(target error) bool {
	c, ok := api.Lookup(e.Code)
	return ok && c.Err != nil && c.Err == target
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("provider %s %w: %w", c.BaseURL, ErrUnreachable, err)
		}
		return fmt.Errorf("provider %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct {
			Error *Error `json:"error"`
		}
		if json.NewDecoder(resp.Body).Decode(&e) != nil || e.Error == nil {
			return &Error{Status: resp.StatusCode, Code: "http", Message: resp.Status}
		}
		e.Error.Status = resp.StatusCode
		return e.Error
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// AddMachine catalogs m.
func (c *Client) AddMachine(ctx context.Context, m api.Machine) (api.Machine, error) {
	var out api.Machine
	return out, c.do(ctx, http.MethodPost, "/v1/machines", m, &out)
}

// AddMachines catalogs a batch of machines (at most 1,000), each as
// AddMachine would: errs[i] is ms[i]'s error, if any. The error is for
// the batch as a whole (an invalid machine refuses all of them).
func (c *Client) AddMachines(ctx context.Context, ms []api.Machine) (added []api.Machine, errs []error, err error) {
	var out struct {
		Results []struct {
			Machine *api.Machine `json:"machine"`
			Error   *Error       `json:"error"`
		} `json:"results"`
	}
	in := struct {
		Machines []api.Machine `json:"machines"`
	}{ms}
	if err := c.do(ctx, http.MethodPost, "/v1/machines:batchAdd", in, &out); err != nil {
		return nil, nil, err
	}
	if len(out.Results) != len(ms) {
		return nil, nil, fmt.Errorf("provider %s: %d results for %d machines", c.BaseURL, len(out.Results), len(ms))
	}
	added, errs = make([]api.Machine, len(ms)), make([]error, len(ms))
	for i, r := range out.Results {
		switch {
		case r.Error != nil:
			errs[i] = r.Error
		case r.Machine != nil:
			added[i] = *r.Machine
		default:
			errs[i] = fmt.Errorf("provider %s: no result for %s", c.BaseURL, ms[i].Hostname)
		}
	}
	return added, errs, nil
}

// Machines lists the catalog the caller may see.
func (c *Client) Machines(ctx context.Context) ([]api.Machine, error) {
	var out struct {
		Machines []api.Machine `json:"machines"`
	}
	return out.Machines, c.do(ctx, http.MethodGet, "/v1/machines", nil, &out)
}

// DeleteMachine removes a machine that is not leased.
func (c *Client) DeleteMachine(ctx context.Context, hostname string) error {
	return c.do(ctx, http.MethodDelete, "/v1/machines/"+url.PathEscape(hostname), nil, nil)
}

// RequestLease asks for a machine.
func (c *Client) RequestLease(ctx context.Context, r api.LeaseRequest) (api.Lease, error) {
	var out api.Lease
	return out, c.do(ctx, http.MethodPost, "/v1/leases", r, &out)
}

// Lease returns a lease; with wait > 0, a pending one is answered when it
// changes or wait passes.
func (c *Client) Lease(ctx context.Context, id string, wait time.Duration) (api.Lease, error) {
	return c.leaseWhile(ctx, id, api.Pending, wait)
}

func (c *Client) leaseWhile(ctx context.Context, id, state string, wait time.Duration) (api.Lease, error) {
	var out api.Lease
	path := "/v1/leases/" + url.PathEscape(id)
	if wait > 0 {
		path += "?wait=" + wait.String() + "&while=" + state
	}
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// LeaseWhile returns lease id when it is no longer in state (PENDING or
// FULFILLED) or wait passes, whichever is first.
func (c *Client) LeaseWhile(ctx context.Context, id, state string, wait time.Duration) (api.Lease, error) {
	return c.leaseWhile(ctx, id, state, wait)
}

// WaitLease waits until lease id is no longer pending, or ctx ends.
func (c *Client) WaitLease(ctx context.Context, id string) (api.Lease, error) {
	return c.WatchLease(ctx, id, api.Pending)
}

// WatchLease waits until lease id is no longer in state (PENDING or
// FULFILLED), or ctx ends, and returns it as it is then. A lessee watches
// a fulfilled lease with state FULFILLED to learn when it is released or
// expires.
func (c *Client) WatchLease(ctx context.Context, id, state string) (api.Lease, error) {
	for {
		l, err := c.leaseWhile(ctx, id, state, time.Minute)
		if err != nil || l.State != state {
			return l, err
		}
	}
}

// Leases lists the caller's leases; active limits them to pending and
// fulfilled ones.
func (c *Client) Leases(ctx context.Context, active bool) ([]api.Lease, error) {
	var out struct {
		Leases []api.Lease `json:"leases"`
	}
	return out.Leases, c.do(ctx, http.MethodGet, "/v1/leases?active="+strconv.FormatBool(active), nil, &out)
}

// Extend gives a fulfilled lease a new term from now.
func (c *Client) Extend(ctx context.Context, id string, t api.Term) (api.Lease, error) {
	var out api.Lease
	return out, c.do(ctx, http.MethodPost, "/v1/leases/"+url.PathEscape(id)+"/extend", map[string]any{"term": t}, &out)
}

// Release ends a lease.
func (c *Client) Release(ctx context.Context, id string) (api.Lease, error) {
	var out api.Lease
	return out, c.do(ctx, http.MethodPost, "/v1/leases/"+url.PathEscape(id)+"/release", nil, &out)
}

// Events returns the caller's events after cursor; with wait > 0, an empty
// answer waits for one until wait passes.
func (c *Client) Events(ctx context.Context, after int64, wait time.Duration) ([]api.Event, error) {
	var out struct {
		Events []api.Event `json:"events"`
	}
	path := "/v1/events?after=" + strconv.FormatInt(after, 10)
	if wait > 0 {
		path += "&wait=" + wait.String()
	}
	return out.Events, c.do(ctx, http.MethodGet, path, nil, &out)
}

// ClaimKey returns the public half of the provider's claim key, which
// signs the claims of pool machines' leases (backend or admin role).
func (c *Client) ClaimKey(ctx context.Context) (api.ClaimKey, error) {
	var out api.ClaimKey
	return out, c.do(ctx, http.MethodGet, "/v1/claim-key", nil, &out)
}

// IsForbidden reports whether err is the API refusing the caller's role.
func IsForbidden(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusForbidden
}
