package provider_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/gcefleet/gcefleet/provider/api"
)

// document loads and checks provider/openapi.yaml, the document the
// server serves, without its servers (so that it routes any host).
func document(t testing.TB) *openapi3.T {
	t.Helper()
	b, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(b)
	if err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	doc.Servers = nil
	return doc
}

// conform holds h to the OpenAPI document: every request to /v1/ and its
// answer are validated against it, and a test fails for an answer the
// document does not describe, or a success for a request the document
// refuses.
func conform(t testing.TB, h http.Handler) http.Handler {
	t.Helper()
	router, err := legacy.NewRouter(document(t))
	if err != nil {
		t.Fatal(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") || r.URL.Path == "/v1/openapi.yaml" {
			h.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		route, params, routeErr := router.FindRoute(r)
		if routeErr != nil {
			h.ServeHTTP(rec, r)
			if rec.status < 400 {
				t.Errorf("%s %s: answered %d, but the document has no such operation (%v)", r.Method, r.URL, rec.status, routeErr)
			}
			return
		}
		check := r.Clone(r.Context())
		check.Body = io.NopCloser(bytes.NewReader(body))
		if len(body) > 0 && check.Header.Get("Content-Type") == "" {
			// The document says a body is read as JSON whatever its
			// Content-Type, as the server does.
			check.Header.Set("Content-Type", "application/json")
		}
		in := &openapi3filter.RequestValidationInput{
			Request: check, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		}
		reqErr := openapi3filter.ValidateRequest(r.Context(), in)
		h.ServeHTTP(rec, r)
		if reqErr != nil && rec.status < 400 {
			t.Errorf("%s %s %s: answered %d, but the document refuses the request: %v", r.Method, r.URL, body, rec.status, reqErr)
		}
		validateResponse(t, in, route, rec)
	})
}

func validateResponse(t testing.TB, in *openapi3filter.RequestValidationInput, route *routers.Route, rec *recorder) {
	t.Helper()
	r := in.Request
	if rec.status == 499 {
		return // no one reads it: the client went away
	}
	// The response is validated as the request was, with its body kept.
	err := openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 rec.status,
		Header:                 rec.Header(),
		Body:                   io.NopCloser(bytes.NewReader(rec.body.Bytes())),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	})
	if err != nil {
		t.Errorf("%s %s (%s): the answer %d %s is not what the document says: %v", r.Method, r.URL, route.Path, rec.status, rec.body.Bytes(), err)
	}
}

// recorder passes a response through and keeps its status and body.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// TestDocumentKnowsEveryErrorCode checks the document's list of error
// codes against api's table.
func TestDocumentKnowsEveryErrorCode(t *testing.T) {
	doc := document(t)
	var inDoc []string
	for _, v := range doc.Components.Schemas["Error"].Value.Properties["error"].Value.Properties["code"].Value.Enum {
		inDoc = append(inDoc, v.(string))
	}
	var inTable []string
	for _, c := range api.Codes() {
		inTable = append(inTable, c.Code)
	}
	slices.Sort(inDoc)
	slices.Sort(inTable)
	if !slices.Equal(inDoc, inTable) {
		t.Errorf("the document's error codes are %v; api.Codes has %v", inDoc, inTable)
	}
}

// failures records what a test would fail with.
type failures struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (f *failures) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

// TestConformCatchesDrift checks that conform fails a test for an answer
// the document does not describe and for a request it refuses that the
// server takes.
func TestConformCatchesDrift(t *testing.T) {
	drifted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"machines": [{"hostname": 5}]}`)
	})
	for _, c := range []struct{ method, path, body, want string }{
		{"GET", "/v1/machines", "", "is not what the document says"},
		{"POST", "/v1/leases", `{"request_id": ""}`, "the document refuses the request"},
		{"GET", "/v1/nothing", "", "no such operation"},
	} {
		f := &failures{TB: t}
		srv := httptest.NewServer(conform(f, drifted))
		req, err := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		srv.Close()
		if len(f.errs) == 0 || !strings.Contains(strings.Join(f.errs, "\n"), c.want) {
			t.Errorf("%s %s answered by a drifted server: conform reported %q, want %q", c.method, c.path, f.errs, c.want)
		}
	}
}
