package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	compute "google.golang.org/api/compute/v1"
)

const fuzzZone = "us-central1-a"

// fuzzInstance is what a filter is matched against: a field of every kind
// the filter reads, maps and lists included.
func fuzzInstance() *compute.Instance {
	v := "b"
	return &compute.Instance{
		Name:   "web-1",
		Status: "RUNNING",
		Id:     12345,
		Labels: map[string]string{"owner": "ci", "run": "7"},
		Metadata: &compute.Metadata{Items: []*compute.MetadataItems{
			{Key: "a", Value: &v}, {Key: "nil"},
		}},
		Disks:             []*compute.AttachedDisk{{Boot: true, DiskSizeGb: 10}, nil},
		NetworkInterfaces: []*compute.NetworkInterface{{NetworkIP: "10.0.0.2", AccessConfigs: []*compute.AccessConfig{{NatIP: "1.2.3.4"}}}},
		Scheduling:        &compute.Scheduling{Preemptible: true},
	}
}

// FuzzFilter: a list filter, whatever its text, is parsed or refused, and
// a parsed one can be matched, promptly and without a panic; through the
// API, a refused one answers 400 invalid and never a 5xx.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{
		"",
		`name = "web-1"`,
		`labels.owner = "ci" AND status = RUNNING`,
		`(status = RUNNING) (zone : central)`,
		`(a = 1) OR (b != 2)`,
		`labels.run:*`,
		`name eq 'web-.*'`,
		`name ne web-[0-9]+`,
		`NOT status = TERMINATED`,
		`- labels.owner = x`,
		`id > 100 id <= 99999999999999999999999 id >= 1e400`,
		`disks.diskSizeGb < 20 disks.boot = true`,
		`networkInterfaces.accessConfigs.natIP = "1.2.3.4"`,
		`metadata.items.key = a`,
		`name eq '(((('`,
		`name eq 'a{1000}{1000}'`,
		`name eq '\C'`,
		`((((`,
		`))))`,
		`name =`,
		`= = =`,
		`"unterminated`,
		"name = \"\x00\"",
		"name = \xff\xfe",
		strings.Repeat("(", 10000) + "a = 1" + strings.Repeat(")", 10000),
		strings.Repeat("NOT ", 10000) + "a = 1",
		strings.Repeat("- ", 10000) + "a = 1",
		strings.Repeat("a = 1 OR ", 2000) + "a = 1",
		strings.Repeat("a.", 5000) + "b = 1",
	} {
		f.Add(s)
	}
	emu := New(Options{})
	f.Cleanup(func() { emu.Close() })
	seed(f, emu)
	in := reflect.ValueOf(fuzzInstance())
	f.Fuzz(func(t *testing.T, expr string) {
		defer hangWatch(expr)()
		if flt, err := parseFilter(expr); err == nil {
			flt.match(in)
		}
		path := "/compute/v1/projects/p/zones/" + fuzzZone + "/instances?filter=" + url.QueryEscape(expr)
		code, body := serve(emu, http.MethodGet, path, nil)
		checkAnswer(t, code, body, expr)
		if code != http.StatusOK && code != http.StatusBadRequest {
			t.Errorf("filter %q: %d, want 200 or 400:\n%s", expr, code, body)
		}
	})
}

// A request body the fuzzer varies, sent to one of the API's methods.
type fuzzCall struct {
	method, path string
}

var fuzzCalls = []fuzzCall{
	{"POST", "/compute/v1/projects/p/zones/" + fuzzZone + "/instances"},
	{"POST", "/compute/v1/projects/p/zones/" + fuzzZone + "/instances/bulkInsert"},
	{"POST", "/compute/v1/projects/p/zones/" + fuzzZone + "/instances/vm-1/setMetadata"},
	{"POST", "/compute/v1/projects/p/zones/" + fuzzZone + "/instances/vm-1/setLabels"},
	{"POST", "/compute/v1/projects/p/global/instanceTemplates"},
	{"POST", "/compute/v1/projects/p/zones/" + fuzzZone + "/instanceGroupManagers"},
	{"POST", "/compute/v1/projects/p/zones/" + fuzzZone + "/instanceGroupManagers/grp/resize"},
	{"POST", "/compute/v1/projects/p/zones/" + fuzzZone + "/instanceGroupManagers/grp/createInstances"},
	{"POST", "/compute/v1/projects/p/zones/" + fuzzZone + "/instanceGroupManagers/grp/deleteInstances"},
	{"POST", "/compute/v1/projects/p/global/firewalls"},
}

const (
	fuzzVM       = `{"name":"vm-2","machineType":"zones/us-central1-a/machineTypes/e2-standard-2","disks":[{"boot":true,"initializeParams":{"sourceImage":"projects/cos-cloud/global/images/family/cos-stable"}}],"networkInterfaces":[{"network":"global/networks/default"}]}`
	fuzzProps    = `{"machineType":"e2-standard-2","disks":[{"boot":true,"initializeParams":{"sourceImage":"projects/cos-cloud/global/images/family/cos-stable"}}],"networkInterfaces":[{}]}`
	fuzzTemplate = `{"name":"tmpl","properties":` + fuzzProps + `}`
)

// FuzzRequestBody: whatever body (and query) a mutating method is sent, it
// answers 200 with an operation or a 4xx with GCE's error shape, never a
// 5xx, promptly and without a panic. FP_METADATA and FP_LABELS in a body
// stand for the instance's current fingerprints, so that the fuzzer gets
// past the fingerprint checks to the validation behind them.
func FuzzRequestBody(f *testing.F) {
	good := []string{
		fuzzVM,
		`{"count":"2","namePattern":"bulk-##","instanceProperties":` + fuzzProps + `}`,
		`{"fingerprint":"FP_METADATA","items":[{"key":"k","value":"v"}]}`,
		`{"labelFingerprint":"FP_LABELS","labels":{"a":"b"}}`,
		`{"name":"tmpl-2","properties":` + fuzzProps + `}`,
		`{"name":"grp-2","instanceTemplate":"global/instanceTemplates/tmpl","targetSize":2}`,
		``,
		`{"instances":[{"name":"made-1"}]}`,
		`{"instances":["zones/us-central1-a/instances/vm-1"],"skipInstancesOnValidationError":true}`,
		`{"name":"fw","allowed":[{"IPProtocol":"tcp","ports":["22"]}]}`,
	}
	for i, body := range good {
		f.Add(uint8(i), body, "")
	}
	for i, body := range []string{
		fuzzVM[:len(fuzzVM)-1] + `,"scheduling":{"provisioningModel":"SPOT","instanceTerminationAction":"DELETE","maxRunDuration":{"seconds":"30","nanos":-1}}}`,
		`{"count":"1000","minCount":"-1","namePattern":"` + strings.Repeat("#", 40) + `","instanceProperties":` + fuzzProps + `}`,
		`{"fingerprint":"FP_METADATA","items":[null,{"key":"` + strings.Repeat("k", 200) + `"}]}`,
		`{"labelFingerprint":"FP_LABELS","labels":{"\u0000":"\ud800"}}`,
		`{"name":"t","properties":{"machineType":"","disks":[]}}`,
		`{"name":"g","versions":[null],"targetSize":"-1"}`,
		``,
		`{"instances":[null]}`,
		`{"instances":[""]}`,
		`{"name":"f","allowed":[null]}`,
	} {
		f.Add(uint8(i), body, "requestId=00000000-0000-0000-0000-000000000001&sourceInstanceTemplate=global/instanceTemplates/tmpl&size=9223372036854775808")
	}
	for _, body := range []string{"null", "[]", "0", `"x"`, "{", `{"name":` + strings.Repeat("[", 100000), "\x00", "\xff", `{"name":1e999}`, `{"count":"99999999999999999999"}`,
		`{"name":1}`, `{"disks":"x"}`, `{"count":2}`, `{"disks":[{"initializeParams":{"diskSizeGb":true}}]}`} {
		f.Add(uint8(0), body, "")
		f.Add(uint8(1), body, "size=1")
	}
	f.Fuzz(func(t *testing.T, which uint8, body, query string) {
		defer hangWatch(fmt.Sprint(which, body, query))()
		emu := New(Options{})
		defer emu.Close()
		fp := seed(t, emu)
		body = strings.NewReplacer("FP_METADATA", fp.metadata, "FP_LABELS", fp.labels).Replace(body)
		c := fuzzCalls[int(which)%len(fuzzCalls)]
		path := c.path
		if query != "" {
			path += "?" + query
		}
		code, answer := serve(emu, c.method, path, strings.NewReader(body))
		if code == 0 {
			return // no HTTP client could send it
		}
		checkAnswer(t, code, answer, body)
		if code >= 300 && code != http.StatusBadRequest && code != http.StatusNotFound && code != http.StatusConflict && code != http.StatusPreconditionFailed {
			t.Errorf("%s %s %q: %d:\n%s", c.method, path, body, code, answer)
		}
	})
}

type fingerprints struct{ metadata, labels string }

// seed gives emu what the fuzzed calls act on: template tmpl, instance
// vm-1 and group grp of one instance, all in project p.
func seed(tb testing.TB, emu *Emulator) fingerprints {
	tb.Helper()
	base := "/compute/v1/projects/p/"
	for _, c := range []struct{ path, body string }{
		{base + "global/instanceTemplates", fuzzTemplate},
		{base + "zones/" + fuzzZone + "/instances", strings.Replace(fuzzVM, "vm-2", "vm-1", 1)},
		{base + "zones/" + fuzzZone + "/instanceGroupManagers", `{"name":"grp","instanceTemplate":"global/instanceTemplates/tmpl","targetSize":1}`},
	} {
		if code, body := serve(emu, "POST", c.path, strings.NewReader(c.body)); code != http.StatusOK {
			tb.Fatalf("seeding: POST %s: %d %s", c.path, code, body)
		}
	}
	code, body := serve(emu, "GET", base+"zones/"+fuzzZone+"/instances/vm-1", nil)
	var in compute.Instance
	if err := json.Unmarshal(body, &in); code != http.StatusOK || err != nil {
		tb.Fatalf("seeding: GET vm-1: %d %v %s", code, err, body)
	}
	return fingerprints{in.Metadata.Fingerprint, in.LabelFingerprint}
}

// serve sends emu one request, as a client would, and returns its answer;
// a target no client could send answers 0.
func serve(h http.Handler, method, target string, body *strings.Reader) (int, []byte) {
	var rd io.Reader
	if body != nil {
		rd = body
	}
	r, err := http.NewRequest(method, "http://emulator"+target, rd)
	if err != nil {
		return 0, nil
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Body.Bytes()
}

// goText is what GCE's messages never hold: Go's words for its types.
var goText = regexp.MustCompile(`Go struct|Go value|compute\.[A-Z]|json: |\*[a-z]+\.[A-Z]|\bint64\b|\bfloat64\b`)

// checkAnswer fails unless an answer is JSON, not a 5xx, and if an error,
// in GCE's shape: {"error": {"code", "message", "errors": [{"message",
// "domain", "reason"}]}} with the code the status.
func checkAnswer(t *testing.T, code int, body []byte, input string) {
	t.Helper()
	if code >= 500 {
		t.Errorf("input %q: %d, a server error:\n%s", input, code, body)
	}
	if code < 300 {
		var v map[string]any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Errorf("input %q: %d with a body that is not a JSON object: %v\n%s", input, code, err, body)
		}
		return
	}
	var e struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Errors  []struct {
				Message, Domain, Reason string
			} `json:"errors"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == nil {
		t.Errorf("input %q: %d with a body not in GCE's error shape: %v\n%s", input, code, err, body)
		return
	}
	if m := goText.FindString(e.Error.Message); m != "" {
		t.Errorf("input %q: %d with an error that speaks of Go, %q: %s", input, code, m, e.Error.Message)
	}
	if e.Error.Code != code || e.Error.Message == "" || len(e.Error.Errors) != 1 ||
		e.Error.Errors[0].Message == "" || e.Error.Errors[0].Domain == "" || e.Error.Errors[0].Reason == "" {
		t.Errorf("input %q: %d with an error body not in GCE's shape:\n%s", input, code, body)
	}
}

// hangWatch crashes the process if an input is not done with within a few
// seconds: the fuzzer saves a crashing input, but not a slow one.
func hangWatch(input string) (stop func()) {
	t := time.AfterFunc(5*time.Second, func() {
		panic(fmt.Sprintf("took more than 5s: %.300q", input))
	})
	return func() { t.Stop() }
}

// TestDeepFilterRefused: a filter nested beyond reason is refused rather
// than parsed level by level (a second for a megabyte) with the emulator
// locked.
func TestDeepFilterRefused(t *testing.T) {
	emu := New(Options{})
	defer emu.Close()
	for _, expr := range []string{
		strings.Repeat("(", 300000) + "a = 1" + strings.Repeat(")", 300000),
		strings.Repeat("NOT ", 200000) + "a = 1",
		strings.Repeat("(", 65) + "a = 1" + strings.Repeat(")", 65),
	} {
		code, body := serve(emu, "GET", "/compute/v1/projects/p/zones/"+fuzzZone+"/instances?filter="+url.QueryEscape(expr), nil)
		checkAnswer(t, code, body, expr[:20])
		if code != http.StatusBadRequest || !strings.Contains(string(body), "nested more than 64 deep") {
			t.Errorf("filter of %d bytes: %d %.300s; want 400 nested more than 64 deep", len(expr), code, body)
		}
	}
	expr := strings.Repeat("(", 64) + "name = vm" + strings.Repeat(")", 64)
	if code, body := serve(emu, "GET", "/compute/v1/projects/p/zones/"+fuzzZone+"/instances?filter="+url.QueryEscape(expr), nil); code != http.StatusOK {
		t.Errorf("filter nested 64 deep: %d %s; want 200", code, body)
	}
}

// TestNullListElementsRefused: a null in a list of a request body answers
// 400 parseError, as GCE does, and leaves the emulator serving; a null
// firewall rule or disk used to panic with the emulator locked for good.
func TestNullListElementsRefused(t *testing.T) {
	emu := New(Options{})
	defer emu.Close()
	seed(t, emu)
	base := "/compute/v1/projects/p/"
	for _, c := range []struct{ path, body, at string }{
		{base + "global/firewalls", `{"name":"fw","allowed":[null]}`, "resource.allowed[0]"},
		{base + "zones/" + fuzzZone + "/instances", strings.Replace(fuzzVM, `"disks":[`, `"disks":[null,`, 1), "resource.disks[0]"},
		{base + "zones/" + fuzzZone + "/instances", strings.Replace(fuzzVM, `"networkInterfaces":[{`, `"networkInterfaces":[{"accessConfigs":[null],`, 1), "resource.networkInterfaces[0].accessConfigs[0]"},
		{base + "zones/" + fuzzZone + "/instanceGroupManagers", `{"name":"g","versions":[null]}`, "resource.versions[0]"},
		{base + "global/instanceTemplates", `{"name":"t","properties":{"serviceAccounts":[null]}}`, "resource.properties.serviceAccounts[0]"},
	} {
		code, body := serve(emu, "POST", c.path, strings.NewReader(c.body))
		checkAnswer(t, code, body, c.body)
		if code != http.StatusBadRequest || !strings.Contains(string(body), `"parseError"`) || !strings.Contains(string(body), "'"+c.at+"'") {
			t.Errorf("POST %s %s: %d %s; want 400 parseError at %s", c.path, c.body, code, body, c.at)
		}
		if code, body := serve(emu, "GET", base+"zones/"+fuzzZone+"/instances/vm-1", nil); code != http.StatusOK {
			t.Fatalf("after POST %s %s the emulator answers %d %s", c.path, c.body, code, body)
		}
	}
}

// TestBodyErrorsSpeakGCE: a body of the wrong shape is refused in terms of
// its fields, as GCE refuses it, not in Go's words for the emulator's types.
func TestBodyErrorsSpeakGCE(t *testing.T) {
	emu := New(Options{})
	defer emu.Close()
	path := "/compute/v1/projects/p/zones/" + fuzzZone + "/instances"
	for body, want := range map[string]string{
		`{"name":1}`: `Invalid value at 'resource.name' (TYPE_STRING), a JSON number.`,
		`{"disks":[{"initializeParams":{"diskSizeGb":"x"}}]}`: `a 64-bit integer field as a decimal string, such as \"10\"`,
		`{"disks":"x"}`:  `Invalid value at 'resource.disks' (a list), a JSON string.`,
		`{"name":"x"`:    `Invalid JSON payload received. Unexpected token at offset 11.`,
		`{"name":"x"} x`: `Invalid JSON payload received. Unexpected token at offset 14.`,
	} {
		code, answer := serve(emu, "POST", path, strings.NewReader(body))
		checkAnswer(t, code, answer, body)
		if code != http.StatusBadRequest || !strings.Contains(string(answer), want) {
			t.Errorf("%s: %d %s; want 400 %q", body, code, answer, want)
		}
	}
}

// TestBulkInsertCounts: a negative minCount, or maxRunDuration.nanos out
// of range (which overflowed the run's duration), is refused; a namePattern
// of more than 18 '#' names instances (its limit overflowed an int and
// refused it as too short).
func TestBulkInsertCounts(t *testing.T) {
	emu := New(Options{})
	defer emu.Close()
	path := "/compute/v1/projects/p/zones/" + fuzzZone + "/instances/bulkInsert"
	code, body := serve(emu, "POST", path, strings.NewReader(`{"count":"1","minCount":"-1","namePattern":"neg-#","instanceProperties":`+fuzzProps+`}`))
	checkAnswer(t, code, body, "minCount -1")
	if code != http.StatusBadRequest || !strings.Contains(string(body), "resource.minCount") {
		t.Errorf("minCount -1: %d %s; want 400 on resource.minCount", code, body)
	}
	vm := fuzzVM[:len(fuzzVM)-1] + `,"scheduling":{"instanceTerminationAction":"DELETE","maxRunDuration":{"seconds":"60","nanos":-9000000000000000000}}}`
	code, body = serve(emu, "POST", "/compute/v1/projects/p/zones/"+fuzzZone+"/instances", strings.NewReader(vm))
	checkAnswer(t, code, body, "nanos")
	if code != http.StatusBadRequest || !strings.Contains(string(body), "maxRunDuration.nanos") {
		t.Errorf("maxRunDuration.nanos -9e18: %d %s; want 400 on it", code, body)
	}
	// GCE allows at most 18 '#'; more is refused, not overflowed.
	code, body = serve(emu, "POST", path, strings.NewReader(`{"count":"2","namePattern":"w`+strings.Repeat("#", 40)+`","instanceProperties":`+fuzzProps+`}`))
	checkAnswer(t, code, body, "40 #")
	if code != http.StatusBadRequest || !strings.Contains(string(body), "resource.namePattern") {
		t.Errorf("namePattern of 40 '#': %d %s; want 400 on resource.namePattern", code, body)
	}
}
