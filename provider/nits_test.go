package provider_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/internal/testutil"
)

// testCertPEM is a parseable certificate for a machine's ca_cert.
var testCertPEM = func() string {
	c, err := testutil.SelfSigned("ca")
	if err != nil {
		panic(err)
	}
	certPEM, _ := testutil.CertPEM(c)
	return string(certPEM)
}()

// TestAmbiguousRequestsRefused: requests the API could read more than
// one way, or not as sent, are refused with what is wrong, not read one
// of the ways.
func TestAmbiguousRequestsRefused(t *testing.T) {
	w := start(t)
	lr := `{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`
	certJSON, err := json.Marshal(testCertPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, method, path string
		headers            map[string][]string
		body               string
		status             int
		want               string // in the message or a field's error
	}{
		{"a dimension key twice", "POST", "/v1/leases", nil, `{"request_id":"r1","dimensions":{"os":["linux"],"os":["x"]},"term":{"duration":3600000000000}}`, 400, "given twice"},
		{"a machine's dimension key twice", "POST", "/v1/machines", nil, `{"hostname":"vm-x","dimensions":{"os":["linux"],"os":["x"]}}`, 400, "given twice"},
		{"form body", "POST", "/v1/leases", map[string][]string{"Content-Type": {"application/x-www-form-urlencoded"}}, lr, 415, "Content-Type"},
		{"text body", "POST", "/v1/leases", map[string][]string{"Content-Type": {"text/plain"}}, lr, 415, "application/json"},
		{"gzip", "POST", "/v1/leases", map[string][]string{"Content-Encoding": {"gzip"}}, lr, 415, "Content-Encoding"},
		{"two tokens", "GET", "/v1/leases", map[string][]string{"Authorization": {"Bearer " + clientTok, "Bearer " + adminTok}}, "", 401, "bearer token"},
		{"after=+1", "GET", "/v1/events?after=%2B1", nil, "", 400, "whole number"},
		{"after=01", "GET", "/v1/events?after=01", nil, "", 400, "whole number"},
		{"after empty", "GET", "/v1/events?after=", nil, "", 400, "whole number"},
		{"ca_cert not PEM", "POST", "/v1/machines", nil, `{"hostname":"vm-x","connection":{"ca_cert":"hello"}}`, 400, "X.509"},
		{"ca_cert PEM of a key", "POST", "/v1/machines", nil, `{"hostname":"vm-x","connection":{"ca_cert":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}}`, 400, "X.509"},
		{"ca_cert with more after it", "POST", "/v1/machines", nil, `{"hostname":"vm-x","connection":{"ca_cert":` + strings.TrimSuffix(string(certJSON), `"`) + `junk"}}`, 400, "X.509"},
		{"another backend's events", "GET", "/v1/events?backend=other", nil, "", 403, `not "other"`},
		{"a long duration", "POST", "/v1/leases", nil, `{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"duration":` + strings.Repeat("9", 5000) + `}}`, 400, "…"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, w.url+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			tok := clientTok
			if strings.Contains(c.path, "machines") || strings.Contains(c.path, "events") {
				tok = backendTok
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			for k, vs := range c.headers {
				req.Header[k] = vs
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var a apiAnswer
			if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
				t.Fatalf("%d, not the API's error shape: %v", resp.StatusCode, err)
			}
			if resp.StatusCode != c.status || !strings.Contains(a.Error.Message, c.want) {
				t.Errorf("%d %+v, want %d saying %q", resp.StatusCode, a.Error, c.status, c.want)
			}
			if len(a.Error.Message) > 400 {
				t.Errorf("a message of %d bytes: want the value it names cut short", len(a.Error.Message))
			}
		})
	}
	// What is right is still taken.
	for _, c := range []struct{ path, ctype, body string }{
		{"/v1/leases", "application/json; charset=utf-8", lr},
		{"/v1/machines", "", `{"hostname":"vm-ok","connection":{"ca_cert":` + string(certJSON) + `}}`},
	} {
		req, err := http.NewRequest("POST", w.url+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		tok := clientTok
		if strings.Contains(c.path, "machines") {
			tok = backendTok
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Errorf("POST %s %s: %d, want 2xx", c.path, c.body, resp.StatusCode)
		}
	}
	for _, q := range []string{"", "?after=0", "?after=17", "?backend=gce"} {
		req, err := http.NewRequest("GET", w.url+"/v1/events"+q, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+backendTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET /v1/events%s as gce: %d, want 200", q, resp.StatusCode)
		}
	}
}
