package client

import (
	"context"
	"net/http"
	"net/url"
)

// MachineGone tells the provider that a machine's instance is gone
// (deleted behind its backend's back, or preempted): it leaves the
// catalog even if leased, its lease ending RECLAIMED. It returns the id of
// the lease it ended, "" if it was not leased.
func (c *Client) MachineGone(ctx context.Context, hostname string) (string, error) {
	var out struct {
		Lease string `json:"lease_id"`
	}
	return out.Lease, c.do(ctx, http.MethodPost, "/v1/machines/"+url.PathEscape(hostname)+"/gone", nil, &out)
}
