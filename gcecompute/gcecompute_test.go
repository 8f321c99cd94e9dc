package gcecompute_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/googleapi"

	"github.com/gcefleet/gcefleet/gcecompute"
)

func TestClassify(t *testing.T) {
	rate := &googleapi.Error{Code: 403, Message: "Rate Limit Exceeded", Errors: []googleapi.ErrorItem{{Reason: "rateLimitExceeded"}}}
	for _, tc := range []struct {
		err  error
		want gcecompute.Class
	}{
		{rate, gcecompute.RateLimited},
		{fmt.Errorf("wrapped: %w", rate), gcecompute.RateLimited},
		{&googleapi.Error{Code: 429}, gcecompute.RateLimited},
		{&googleapi.Error{Code: 503}, gcecompute.Transient},
		{&googleapi.Error{Code: 404}, gcecompute.NotFound},
		{&googleapi.Error{Code: 409}, gcecompute.Exists},
		{&googleapi.Error{Code: 403, Message: "Required 'compute.instances.create' permission"}, gcecompute.Denied},
		{&googleapi.Error{Code: 403, Message: "QUOTA_EXCEEDED: Quota 'CPUS' exceeded"}, gcecompute.Quota},
		{&googleapi.Error{Code: 400, Message: "Invalid value for field"}, gcecompute.Invalid},
		{&gcecompute.OpError{Codes: []string{"ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"}, Errors: []string{"no capacity"}}, gcecompute.Stockout},
		{&gcecompute.OpError{Codes: []string{"QUOTA_EXCEEDED"}, Errors: []string{"CPUS"}}, gcecompute.Quota},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, gcecompute.Transient},
		{context.Canceled, gcecompute.Other},
	} {
		if got := gcecompute.Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestRetryRetriesOnlyWhatRetryingFixes(t *testing.T) {
	ctx := context.Background()
	calls := 0
	err := gcecompute.Retry(ctx, func() error {
		calls++
		if calls < 3 {
			return &googleapi.Error{Code: 503}
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("transient errors: %d calls, %v", calls, err)
	}
	calls = 0
	err = gcecompute.Retry(ctx, func() error { calls++; return &googleapi.Error{Code: 404} })
	if calls != 1 || gcecompute.Classify(err) != gcecompute.NotFound {
		t.Errorf("not found: %d calls, %v", calls, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err = gcecompute.Retry(ctx, func() error { return &googleapi.Error{Code: 429} })
	if !errors.Is(err, context.DeadlineExceeded) && gcecompute.Classify(err) != gcecompute.RateLimited {
		t.Errorf("rate limited past the deadline: %v", err)
	}
}

// TestRetrySaysWhatItRetries: retries that go on past a second are logged,
// so that a run held up by rate limits does not look hung.
func TestRetrySaysWhatItRetries(t *testing.T) {
	var buf bytes.Buffer
	ctx := gcecompute.WithRetryLog(context.Background(), slog.New(slog.NewTextHandler(&buf, nil)))
	calls := 0
	err := gcecompute.Retry(ctx, func() error {
		if calls++; calls < 6 {
			return &googleapi.Error{Code: 429, Message: "Rate Limit Exceeded"}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if log := buf.String(); !strings.Contains(log, "retrying") || !strings.Contains(log, "429") || strings.Count(log, "\n") > 2 {
		t.Errorf("retry log:\n%s", log)
	}
}

func TestRequestIDIsAUUID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a, b := gcecompute.RequestID(), gcecompute.RequestID()
	if !re.MatchString(a) || a == b {
		t.Errorf("request ids %q, %q", a, b)
	}
}

func TestCheckEndpoint(t *testing.T) {
	for _, c := range []struct {
		endpoint string
		want     string // part of the error; empty means accepted
	}{
		{"", ""},
		{"http://127.0.0.1:8780", ""},
		{"http://127.0.0.1:8780/", ""},
		{"https://compute.googleapis.com", ""},
		{"http://127.0.0.1:8780/compute/v1/", "the discovery clients' URL: write its base, http://127.0.0.1:8780"},
		{"http://127.0.0.1:8780/compute/v1", "the discovery clients' URL"},
		{"http://127.0.0.1:8780/api", "has a path: write only its base, such as http://127.0.0.1:8780"},
		{"127.0.0.1:8780", "is not a base URL: write http://HOST:PORT"},
		{"ftp://h", "is not a base URL"},
		{"http://h?x=1", "is not a base URL"},
		{"http://user:pw@h", "is not a base URL"},
	} {
		err := gcecompute.CheckEndpoint(c.endpoint)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("CheckEndpoint(%q) = %v, want nil", c.endpoint, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("CheckEndpoint(%q) = %v, want an error containing %q", c.endpoint, err, c.want)
		}
	}
	if _, err := gcecompute.NewClient(t.Context(), "http://127.0.0.1:8780/compute/v1/"); err == nil {
		t.Error("NewClient took the discovery clients' endpoint")
	}
}
