package gcecompute

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/api/googleapi"
)

// FuzzClassify: whatever status and body the Compute API answers with, the
// error the client library makes of it is classified without a panic, into
// one of the classes, and a bad request (code 400, any reason but a
// quota's, a stockout's or a rate limit's) is Invalid, never retried.
func FuzzClassify(f *testing.F) {
	for _, s := range []struct {
		code int
		body string
	}{
		{400, `{"error":{"code":400,"message":"Invalid value for field 'resource.name': 'X'.","errors":[{"message":"m","domain":"global","reason":"invalid"}]}}`},
		{403, `{"error":{"code":403,"message":"Rate Limit Exceeded","errors":[{"domain":"usageLimits","reason":"rateLimitExceeded"}]}}`},
		{403, `{"error":{"code":403,"message":"QUOTA_EXCEEDED","errors":[{"reason":"quotaExceeded"}]}}`},
		{404, `{"error":{"code":404,"message":"The resource 'x' was not found"}}`},
		{409, `{"error":{"code":409}}`},
		{429, ``},
		{503, `not json`},
		{400, `{"error":null}`},
		{400, `{"error":{"errors":[null,{}]}}`},
		{400, `{"error":"a string"}`},
		{0, "\x00\xff"},
		{999, `{"error":{"code":-1,"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"` + strings.Repeat("x", 1000) + `"}]}}`},
	} {
		f.Add(s.code, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, code int, body []byte) {
		if code < 100 || code > 999 {
			code = 400
		}
		resp := &http.Response{StatusCode: code, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(body))}
		err := googleapi.CheckResponse(resp)
		c := Classify(err)
		if c.String() == "" {
			t.Fatalf("class %d of %v has no name", c, err)
		}
		var ge *googleapi.Error
		// The code is the body's, as the library reads it (GCE's is the status).
		if errors.As(err, &ge) && ge.Code == http.StatusBadRequest && c != Invalid && c != Quota && c != RateLimited && c != Stockout {
			t.Errorf("400 %q is %v, want invalid", body, c)
		}
	})
}

// FuzzMethodOf: whatever the path of a call, the metrics name a method
// (collection.verb) or "other", without a panic.
func FuzzMethodOf(f *testing.F) {
	for _, p := range []string{
		"/compute/v1/projects/p/zones/us-central1-a/instanceGroupManagers/g/listManagedInstances",
		"/compute/v1/projects/p/aggregated/instances",
		"/compute/v1/projects/p",
		"/compute/v1/projects",
		"/compute/v1/projects/p/zones",
		"/compute/v1/projects/p/global",
		"projects//",
		"", "/", "//projects///global/",
	} {
		f.Add("GET", p)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		m := methodOf(method, path)
		if m != "other" && m != "projects.get" && !strings.Contains(m, ".") {
			t.Errorf("methodOf(%q, %q) = %q", method, path, m)
		}
	})
}
