package provider_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/store"
)

const (
	adminTok   = "admin-secret-0123456789"
	backendTok = "gce-secret-0123456789"
	clientTok  = "alice-secret-0123456789"
)

// hostileReq is one request of the hostile-input test. raw, when set, is
// written to the connection as it is (for what no HTTP client sends).
type hostileReq struct {
	method, path, body, token string
	raw                       string
}

// internalText is what no answer to a client may hold: the store's, the
// drivers' and the runtime's words, and Go's names for types.
var internalText = []string{"SQLSTATE", "sqlite", "SQL logic", "Expression tree", "store:", "pgx", "postgres", "goroutine", "runtime.", "panic",
	"store.", "provider.", "json:", "Go value", "Go struct", "[]string", "map[", "time.Time", "int64", "reflect"}

// internalWord returns the first of internalText that body holds, or "".
func internalWord(body string) string {
	for _, bad := range internalText {
		if strings.Contains(body, bad) {
			return bad
		}
	}
	return ""
}

// hostileRequests returns at least 200 malformed and hostile requests
// across every endpoint; id is a lease of alice's.
func hostileRequests(id string) []hostileReq {
	var rs []hostileReq
	add := func(method, path, body, token string) {
		rs = append(rs, hostileReq{method: method, path: path, body: body, token: token})
	}
	long := strings.Repeat("a", 3000)
	ids := []string{"%00", "%ff", "%c0%80", "a%00b", "%1b%5b31m", "%e2%80%ae", long, "'%20OR%201=1--", "..%2f..%2fetc", "%ef%bf%bd",
		id + "%00", "%ed%a0%80", "%20", "x", "%0d%0aX-Injected:%201", "%7f"}
	term := `{"term":{"duration":3600000000000}}`
	for _, x := range ids {
		add("GET", "/v1/leases/"+x, "", clientTok)
		add("GET", "/v1/leases/"+x+"?wait=1ms", "", adminTok)
		add("POST", "/v1/leases/"+x+"/extend", term, clientTok)
		add("POST", "/v1/leases/"+x+"/release", "", adminTok)
	}
	for _, h := range append(ids, "UPPER", "a..b", "-a", "a_b", strings.Repeat("a", 64)+".com") {
		add("GET", "/v1/machines/"+h, "", adminTok)
		add("DELETE", "/v1/machines/"+h, "", backendTok)
	}
	for _, q := range []string{"after=abc", "after=99999999999999999999", "after=-1", "after=1.5", "after=%00", "after=0x10", "after=%201",
		"wait=abc", "wait=10m", "wait=-1s", "wait=1e400s", "wait=9223372036854775807h", "backend=%00", "backend=%ff", "backend=" + long,
		"x=1", "after=1&after=2", "%zz", "after=1;wait=1s", "AFTER=1"} {
		add("GET", "/v1/events?"+q, "", adminTok)
		add("GET", "/v1/events?"+q, "", backendTok)
	}
	for _, q := range []string{"active=maybe", "active=%00", "active=TRUE", "client=%ff", "client=%00", "client=" + long, "foo=1", "%zz", "active=true&active=false"} {
		add("GET", "/v1/leases?"+q, "", adminTok)
	}
	for _, q := range []string{"backend=%00", "backend=%ff", "x=1", "%zz", "backend=%1b%5b2J"} {
		add("GET", "/v1/machines?"+q, "", adminTok)
	}
	for _, q := range []string{"while=%00", "while=RELEASED", "wait=abc", "wait=1h", "while=pending", "x=1"} {
		add("GET", "/v1/leases/"+id+"?"+q, "", clientTok)
	}
	for _, p := range []string{"/?%zz", "/?x=%00", "/v1/openapi.yaml?%00", "/v1/openapi.yaml/%00", "/metrics?x=%ff", "/%00", "/v1/%ff"} {
		add("GET", p, "", adminTok)
	}
	add("GET", "/", "", clientTok)
	add("GET", "/", "", backendTok)

	dims1100 := distinct(1100)
	var keys100 []string
	for i := range 100 {
		keys100 = append(keys100, fmt.Sprintf(`"k%d":["v"]`, i))
	}
	leaseBodies := []string{
		`{"request_id":"r\u0000","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`,
		"{\"request_id\":\"r\xff\xfe\",\"dimensions\":{\"os\":[\"linux\"]},\"term\":{\"duration\":3600000000000}}",
		`{"request_id":"r\ud800","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`,
		`{"request_id":"` + strings.Repeat("r", 129) + `","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`,
		`{"request_id":"r\u001b[2J","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`,
		`{"request_id":"r\u202e","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`,
		`{"REQUEST_ID":"r1","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`,
		`{"request_id":"r1","Dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`,
		`{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"Duration":3600000000000}}`,
		`{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"duration":3600000000000},"admin":true}`,
		`{"request_id":"r1","request_id":"r2","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`,
		`{"request_id":"r1","dimensions":{"os":` + dims1100 + `},"term":{"duration":3600000000000}}`,
		`{"request_id":"r1","dimensions":{` + strings.Join(keys100, ",") + `},"term":{"duration":3600000000000}}`,
		`{"request_id":"r1","dimensions":{"os\u0000":["linux"]},"term":{"duration":3600000000000}}`,
		`{"request_id":"r1","dimensions":{"os":["linux\u0000"]},"term":{"duration":3600000000000}}`,
		`{"request_id":"r1","dimensions":{"os":["` + strings.Repeat("x", 300) + `"]},"term":{"duration":3600000000000}}`,
		`{"request_id":"r1","dimensions":{"os":"linux"},"term":{"duration":3600000000000}}`,
		`{"request_id":"r1","dimensions":{"os":[1]},"term":{"duration":3600000000000}}`,
		`{"request_id":"r1","dimensions":{"os":[null]},"term":{"duration":3600000000000}}`,
		`{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"duration":1e400}}`,
		`{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"duration":99999999999999999999}}`,
		`{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"duration":-1}}`,
		`{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"expires_at":"yesterday"}}`,
		`{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"expires_at":"9999-12-31T23:59:59Z"}}`,
		`{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"indefinite":"yes"}}`,
		`{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"duration":3600000000000},"deadline":"0001-01-01T00:00:00Z"}`,
		`{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"duration":3600000000000},"deadline":"-9999-01-01T00:00:00Z"}`,
		`{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}} {"request_id":"r2"}`,
		`{"request_id":"r1","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}garbage`,
		`{"request_id":"r1"`, `not json`, ``, `null`, `[]`, `"string"`, `123`, `{}`, `{"request_id":1}`,
		strings.Repeat("[", 100000), `{"a":` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat("}", 5001),
		`{"request_id":"` + strings.Repeat("x", 2<<20) + `"}`,
		"\xef\xbb\xbf{\"request_id\":\"r1\"}",
	}
	for i, b := range leaseBodies {
		// Each its own request id, so that none is answered as a repeat.
		add("POST", "/v1/leases", strings.Replace(b, `"r1"`, fmt.Sprintf(`"r-%d"`, i), 1), clientTok)
	}
	add("POST", "/v1/leases?x=1", `{"request_id":"rq","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`, clientTok)

	good := `"hostname":"vm-h","dimensions":{"os":["linux"]},"connection":{"address":"10.0.0.1","port":22}`
	machineBodies := []string{
		`{"hostname":"vm\u0000","dimensions":{"os":["linux"]}}`,
		"{\"hostname\":\"vm\xff\",\"dimensions\":{\"os\":[\"linux\"]}}",
		`{"hostname":"vm\u001b[31m","dimensions":{"os":["linux"]}}`,
		`{"hostname":"` + long + `","dimensions":{"os":["linux"]}}`,
		`{"hostname":"a..b","dimensions":{"os":["linux"]}}`,
		`{"hostname":"` + strings.Repeat("a", 64) + `.b","dimensions":{"os":["linux"]}}`,
		`{"HOSTNAME":"vm-h","dimensions":{"os":["linux"]}}`,
		`{` + good + `,"state":"LEASED"}`,
		`{` + good + `,"lease_id":"x"}`,
		`{` + good + `,"extra":1}`,
		`{` + good + `,"hostname":"vm-2"}`,
		`{"hostname":"vm-h","dimensions":{"os":` + dims1100 + `}}`,
		`{"hostname":"vm-h","dimensions":{` + strings.Join(keys100, ",") + `}}`,
		`{"hostname":"vm-h","dimensions":{"OS":["linux"]}}`,
		`{"hostname":"vm-h","dimensions":{"os":[""]}}`,
		`{"hostname":"vm-h","dimensions":{"os":["l\u0085"]}}`,
		`{"hostname":"vm-h","dimensions":{"os":[]}}`,
		`{"hostname":"vm-h","dimensions":{"os":["linux"]},"connection":{"address":"10.0.0.1\u001b[8m"}}`,
		`{"hostname":"vm-h","dimensions":{"os":["linux"]},"connection":{"address":"evil host"}}`,
		`{"hostname":"vm-h","dimensions":{"os":["linux"]},"connection":{"address":"fe80::1%eth0"}}`,
		`{"hostname":"vm-h","dimensions":{"os":["linux"]},"connection":{"port":70000}}`,
		`{"hostname":"vm-h","dimensions":{"os":["linux"]},"connection":{"port":-1}}`,
		`{"hostname":"vm-h","dimensions":{"os":["linux"]},"connection":{"port":"22"}}`,
		`{"hostname":"vm-h","dimensions":{"os":["linux"]},"connection":{"port":99999999999999999999}}`,
		`{"hostname":"vm-h","dimensions":{"os":["linux"]},"connection":{"ca_cert":"` + strings.Repeat("A", 20000) + `"}}`,
		`{"hostname":"vm-h","dimensions":{"os":["linux"]},"connection":{"ca_cert":"\u001b]0;x\u0007"}}`,
		`{"hostname":"vm-h","dimensions":{"os":["linux"]},"connection":{"Port":22}}`,
		`{"hostname":"vm-h","dimensions":{"os":["linux"]},"policies":{"on_reclaim":"EXPLODE"}}`,
		`{"hostname":"vm-h","dimensions":{"os":["linux"]},"policies":{"ON_RECLAIM":"DELETE"}}`,
		`{"hostname":"vm-h","backend":"other"}`,
		`{"hostname":"vm-h","backend":"gce\u0000"}`,
		`{"hostname":"vm-h","added":"never"}`,
		`{"hostname":"vm-h"} trailing`,
		`{"hostname":`, `[{"hostname":"vm-h"}]`, `null`, ``, `{"hostname":"vm-h","dimensions":null,"connection":null}x`,
	}
	for _, b := range machineBodies {
		add("POST", "/v1/machines", b, backendTok)
	}
	var many []string
	for i := range 1001 {
		many = append(many, fmt.Sprintf(`{"hostname":"vm-%d"}`, i))
	}
	batchBodies := []string{
		`{"machines":[]}`, `{"machines":null}`, `{"machines":"x"}`, `{"MACHINES":[{"hostname":"vm-b"}]}`,
		`{"machines":[` + strings.Join(many, ",") + `]}`,
		`{"machines":[{"hostname":"vm-b\u0000"}]}`,
		`{"machines":[{"hostname":"vm-b","dimensions":{"os":` + dims1100 + `}}]}`,
		`{"machines":[{"hostname":"vm-b","Dimensions":{}}]}`,
		`{"machines":[{"hostname":"vm-b","connection":{"address":"\u001b"}}]}`,
		`{"machines":[{"hostname":"vm-b"}],"x":1}`,
		`{"machines":[{"hostname":"vm-b"}]}{}`,
		`{"machines":[1,2,3]}`, `{"machines":[[]]}`, `[]`, `not json`,
	}
	for _, b := range batchBodies {
		add("POST", "/v1/machines:batchAdd", b, backendTok)
	}
	for _, b := range []string{`{"term":{"duration":-5}}`, `{"TERM":{"duration":3600000000000}}`, `{"term":{}}`, `{"term":null}`, `{}`, `x`,
		`{"term":{"duration":3600000000000}} x`, `{"term":{"duration":3600000000000},"id":"other"}`, `{"term":{"expires_at":1}}`, ``} {
		add("POST", "/v1/leases/"+id+"/extend", b, clientTok)
	}
	add("POST", "/v1/leases/"+id+"/release?x=%00", "", clientTok)
	for _, tok := range []string{"", "' OR 1=1 --", strings.Repeat("x", 10000), "admin-secret-0123456789 ", "ADMIN-SECRET-0123456789"} {
		add("GET", "/v1/machines", "", tok)
		add("POST", "/v1/leases", `{"request_id":"r\u0000"}`, tok)
	}
	for _, raw := range []string{
		"GET /v1/leases/\xff HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + adminTok + "\r\n\r\n",
		"GET /v1/leases/\x00 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + adminTok + "\r\n\r\n",
		"GET /v1/events?after=\xff HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + adminTok + "\r\n\r\n",
		"POST /v1/leases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + clientTok + "\r\nContent-Length: 5\r\n\r\n{\"a\":",
		"POST /v1/leases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + clientTok + "\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"GET /v1/machines HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x1b[2J\r\n\r\n",
	} {
		rs = append(rs, hostileReq{raw: raw})
	}
	return rs
}

// TestHostileInput: hundreds of malformed and hostile requests across
// every endpoint, on both stores, answer no 5xx and no internal text,
// and leave the provider serving.
func TestHostileInput(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			database := ""
			if db == "postgres" {
				database = testutil.PostgresURL(t)
			}
			w := startOn(t, database)
			ctx := context.Background()
			if _, err := w.gce.AddMachine(ctx, machine("vm-1")); err != nil {
				t.Fatal(err)
			}
			l, err := w.alice.RequestLease(ctx, lease("job-1"))
			if err != nil {
				t.Fatal(err)
			}
			reqs := hostileRequests(l.ID)
			if len(reqs) < 200 {
				t.Fatalf("only %d hostile requests", len(reqs))
			}
			t.Logf("%d hostile requests", len(reqs))
			hc := &http.Client{Timeout: 30 * time.Second}
			for _, hr := range reqs {
				status, body := sendHostile(t, hc, w.url, hr)
				what := hr.method + " " + hr.path
				if hr.raw != "" {
					what = fmt.Sprintf("raw %.60q", hr.raw)
				}
				if len(what) > 200 {
					what = what[:200] + "..."
				}
				if status >= 500 {
					t.Errorf("%s body %.200q: %d %.300s", what, hr.body, status, body)
				}
				for _, bad := range internalText {
					if strings.Contains(body, bad) && !strings.HasPrefix(hr.path, "/v1/openapi.yaml") && !strings.HasPrefix(hr.path, "/metrics") {
						t.Errorf("%s body %.200q: answer holds %q: %.300s", what, hr.body, bad, body)
					}
				}
			}
			// Nothing was spoiled: the lease and the catalog still serve.
			if got, err := w.alice.Lease(ctx, l.ID, 0); err != nil || got.State != store.Fulfilled {
				t.Errorf("the lease after the hostile requests: %+v, %v", got, err)
			}
			if _, err := w.gce.AddMachine(ctx, machine("vm-2")); err != nil {
				t.Errorf("adding a machine after: %v", err)
			}
		})
	}
}

// sendHostile sends hr and returns the answer's status and body.
func sendHostile(t *testing.T, hc *http.Client, base string, hr hostileReq) (int, string) {
	t.Helper()
	if hr.raw != "" {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, hr.raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("raw %q: %v", hr.raw, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	var body io.Reader
	if hr.body != "" {
		body = strings.NewReader(hr.body)
	}
	req, err := http.NewRequest(hr.method, base+hr.path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", hr.method, hr.path, err)
	}
	if hr.token != "" {
		req.Header.Set("Authorization", "Bearer "+hr.token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %.100s: %v", hr.method, hr.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// apiAnswer is the API's error shape.
type apiAnswer struct {
	Error struct {
		Code, Message string
		Fields        map[string]string
	}
}

// TestFieldErrors: each new check answers 400 with the field it is about.
func TestFieldErrors(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	if _, err := w.gce.AddMachine(ctx, machine("vm-1")); err != nil {
		t.Fatal(err)
	}
	l, err := w.alice.RequestLease(ctx, lease("job-1"))
	if err != nil {
		t.Fatal(err)
	}
	var keys65 []string
	for i := range 65 {
		keys65 = append(keys65, fmt.Sprintf(`"k%d":["v"]`, i))
	}
	lr := func(rest string) string { return `{"request_id":"r1","term":{"duration":3600000000000},` + rest + `}` }
	for _, c := range []struct {
		name                string
		method, path, token string
		body                string
		status              int
		field, want         string
	}{
		{"NUL in a lease id", "GET", "/v1/leases/a%00b", clientTok, "", 400, "id", "control characters"},
		{"invalid UTF-8 in a lease id", "POST", "/v1/leases/%ff/release", clientTok, "", 400, "id", "UTF-8"},
		{"long lease id", "GET", "/v1/leases/" + strings.Repeat("a", 129), clientTok, "", 400, "id", "at most 128"},
		{"NUL in request_id", "POST", "/v1/leases", clientTok, `{"request_id":"r\u0000","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`, 400, "request_id", "printable"},
		{"request_id of 129", "POST", "/v1/leases", clientTok, `{"request_id":"` + strings.Repeat("r", 129) + `","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`, 400, "request_id", "1 to 128"},
		{"1,100 values", "POST", "/v1/leases", clientTok, lr(`"dimensions":{"os":` + distinct(1100) + `}`), 400, "dimensions.os", "at most 64 values"},
		{"65 values", "POST", "/v1/machines", backendTok, `{"hostname":"vm-x","dimensions":{"os":` + distinct(65) + `}}`, 400, "dimensions.os", "at most 64 values"},
		{"65 keys", "POST", "/v1/leases", clientTok, lr(`"dimensions":{` + strings.Join(keys65, ",") + `}`), 400, "dimensions", "at most 64 keys"},
		{"65 values in all", "POST", "/v1/leases", clientTok, lr(`"dimensions":{"os":` + distinct(33) + `,"cpu":` + distinct(32) + `}`), 400, "dimensions", "65 values in all: a request asks for at most 64"},
		{"long value", "POST", "/v1/leases", clientTok, lr(`"dimensions":{"os":["` + strings.Repeat("x", 256) + `"]}`), 400, "dimensions.os", "1 to 255"},
		{"bidi override in a value", "POST", "/v1/leases", clientTok, lr(`"dimensions":{"os":["linux\u202e"]}`), 400, "dimensions.os", "control characters"},
		{"upper-case field", "POST", "/v1/leases", clientTok, `{"REQUEST_ID":"r1","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`, 400, "REQUEST_ID", `did you mean "request_id"`},
		{"unknown field", "POST", "/v1/leases", clientTok, lr(`"dimensions":{"os":["linux"]},"priority":1`), 400, "priority", "unknown field"},
		{"nested unknown field", "POST", "/v1/machines", backendTok, `{"hostname":"vm-x","connection":{"Address":"10.0.0.1"}}`, 400, "connection.Address", `did you mean "address"`},
		{"batch unknown field", "POST", "/v1/machines:batchAdd", backendTok, `{"machines":[{"hostname":"vm-x"},{"hostname":"vm-y","zone":"z"}]}`, 400, "machines[1].zone", "unknown field"},
		{"field twice", "POST", "/v1/leases", clientTok, `{"request_id":"a","request_id":"b","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`, 400, "request_id", "given twice"},
		{"hostname label too long", "POST", "/v1/machines", backendTok, `{"hostname":"` + strings.Repeat("a", 64) + `.example.com"}`, 400, "hostname", "DNS name"},
		{"hostname empty label", "POST", "/v1/machines", backendTok, `{"hostname":"a..b"}`, 400, "hostname", "DNS name"},
		{"hostname in the path", "GET", "/v1/machines/a%00b", adminTok, "", 400, "hostname", "DNS name"},
		{"address with escapes", "POST", "/v1/machines", backendTok, `{"hostname":"vm-x","connection":{"address":"10.0.0.1\u001b[8m"}}`, 400, "connection.address", "IP address"},
		{"address with a space", "POST", "/v1/machines", backendTok, `{"hostname":"vm-x","connection":{"address":"a b"}}`, 400, "connection.address", "DNS name"},
		{"port out of range", "POST", "/v1/machines", backendTok, `{"hostname":"vm-x","connection":{"port":65536}}`, 400, "connection.port", "1 to 65535"},
		{"port as a string", "POST", "/v1/machines", backendTok, `{"hostname":"vm-x","connection":{"port":"22"}}`, 400, "connection.port", "whole number"},
		{"ca_cert with escapes", "POST", "/v1/machines", backendTok, `{"hostname":"vm-x","connection":{"ca_cert":"\u001b]0;x"}}`, 400, "connection.ca_cert", "PEM"},
		{"backend with NUL", "POST", "/v1/machines", adminTok, `{"hostname":"vm-x","backend":"g\u0000"}`, 400, "backend", "control characters"},
		{"after=abc", "GET", "/v1/events?after=abc", adminTok, "", 400, "query.after", "whole number"},
		{"after overflowing", "GET", "/v1/events?after=99999999999999999999", adminTok, "", 400, "query.after", "whole number"},
		{"after negative", "GET", "/v1/events?after=-1", backendTok, "", 400, "query.after", "whole number"},
		{"wait=abc", "GET", "/v1/events?wait=abc", backendTok, "", 400, "query.wait", "duration up to 5m"},
		{"wait too long", "GET", "/v1/leases/" + l.ID + "?wait=6m", clientTok, "", 400, "query.wait", "duration up to 5m"},
		{"active=yes", "GET", "/v1/leases?active=yes", clientTok, "", 400, "query.active", "true or false"},
		{"unknown parameter", "GET", "/v1/machines?limit=5", adminTok, "", 400, "query.limit", "unknown parameter"},
		{"parameter twice", "GET", "/v1/events?after=1&after=2", adminTok, "", 400, "query.after", "given twice"},
		{"client with NUL", "GET", "/v1/leases?client=%00", adminTok, "", 400, "query.client", "control characters"},
		{"a long unknown name is not echoed", "POST", "/v1/leases", clientTok, lr(`"dimensions":{"os":["linux"]},"` + strings.Repeat("x", 5000) + `":1`), 400, "(a name of more than 64 bytes or unprintable)", "unknown field"},
		{"many bad fields, the first 20", "POST", "/v1/machines:batchAdd", backendTok, `{"machines":[` + strings.Repeat(`{"hostname":"BAD"},`, 999) + `{"hostname":"BAD"}]}`, 400, "machines[0].hostname", "DNS name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			req, err := http.NewRequest(c.method, w.url+c.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+c.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var a apiAnswer
			if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
				t.Fatalf("%d, not the API's error shape: %v", resp.StatusCode, err)
			}
			if len(a.Error.Fields) > 20 || len(a.Error.Message) > 4000 {
				t.Errorf("%d fields, a message of %d bytes: want at most 20 fields", len(a.Error.Fields), len(a.Error.Message))
			}
			if resp.StatusCode != c.status || a.Error.Code != "invalid" || !strings.Contains(a.Error.Fields[c.field], c.want) {
				t.Errorf("%d %+v, want %d with fields[%q] saying %q", resp.StatusCode, a.Error, c.status, c.field, c.want)
			}
		})
	}
	// Whole-body problems have no field; each says what is wrong.
	for body, want := range map[string]string{
		`{"request_id":"r1"} {"request_id":"r2"}`:             "data after the JSON value",
		`{"request_id":"r1"}x`:                                "data after the JSON value",
		`{"request_id":`:                                      "ends early",
		"{\"request_id\":\"\xff\"}":                           "not valid UTF-8",
		strings.Repeat("[", 1000):                             "ends early",
		strings.Repeat("[", 1000) + strings.Repeat("]", 1000): "an object, not array",
		`[]`: "an object, not array",
		`{"request_id":"` + strings.Repeat("x", 2<<20) + `"}`: "larger than 1048576 bytes",
	} {
		req, err := http.NewRequest("POST", w.url+"/v1/leases", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+clientTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var a apiAnswer
		err = json.NewDecoder(resp.Body).Decode(&a)
		resp.Body.Close()
		if err != nil || resp.StatusCode/100 != 4 || !strings.Contains(a.Error.Message, want) {
			t.Errorf("body %.40q: %d %+v (%v), want a message saying %q", body, resp.StatusCode, a.Error, err, want)
		}
	}
}

// distinct returns a JSON array of n different values.
func distinct(n int) string {
	vs := make([]string, n)
	for i := range vs {
		vs[i] = fmt.Sprintf(`"v%d"`, i)
	}
	return "[" + strings.Join(vs, ",") + "]"
}

// TestInternalErrorsAnswerAnIDOnly: an error of the store is answered as
// "internal error (id X)" and nothing of its text, which the log has
// under the same id.
func TestInternalErrorsAnswerAnIDOnly(t *testing.T) {
	cfg, err := provider.ParseConfig("test.yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "p.db")
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	logs := &testutil.SyncBuffer{}
	srv := httptest.NewServer(provider.New(st, cfg, slog.New(slog.NewTextHandler(logs, nil))).Handler())
	defer srv.Close()
	// The catalog's table gone under it, every read of it fails inside
	// the store.
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("DROP TABLE machines"); err != nil {
		t.Fatal(err)
	}
	w := &world{url: srv.URL}
	status, body := getAs(t, w, adminTok, "/v1/machines")
	var a apiAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("%d %s: %v", status, body, err)
	}
	m := regexp.MustCompile(`^internal error \(id ([0-9a-f]{16})\)$`).FindStringSubmatch(a.Error.Message)
	if status != 500 || a.Error.Code != "internal" || m == nil {
		t.Fatalf("%d %+v, want 500 internal error (id ...)", status, a.Error)
	}
	if log := logs.String(); !strings.Contains(log, "id="+m[1]) || !strings.Contains(log, "no such table") {
		t.Errorf("the log does not hold the error under id %s:\n%s", m[1], log)
	}
}
