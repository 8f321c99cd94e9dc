package emulator_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The Compute v1 discovery document ships inside google.golang.org/api; the
// tests check every JSON answer of the emulator against its schemas.

type schema struct {
	ID                   string             `json:"id"`
	Type                 string             `json:"type"`
	Format               string             `json:"format"`
	Ref                  string             `json:"$ref"`
	Properties           map[string]*schema `json:"properties"`
	AdditionalProperties *schema            `json:"additionalProperties"`
	Items                *schema            `json:"items"`
}

type discovery struct {
	Schemas map[string]*schema `json:"schemas"`
}

var loadDiscovery = sync.OnceValues(func() (*discovery, error) {
	// The module's directory, at the version go.mod requires.
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "google.golang.org/api").Output()
	if err != nil {
		return nil, fmt.Errorf("go list -m google.golang.org/api: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), "compute", "v1", "compute-api.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the Compute discovery document (run 'go mod download'): %v", err)
	}
	var d discovery
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, err
	}
	return &d, nil
})

// schemaFor names the schema of a response from its kind, or from the
// request path for the few responses without one.
func schemaFor(path string, body map[string]any) string {
	if kind, ok := body["kind"].(string); ok {
		name, _ := strings.CutPrefix(kind, "compute#")
		return strings.ToUpper(name[:1]) + name[1:]
	}
	switch {
	case strings.HasSuffix(path, "/listManagedInstances"):
		return "InstanceGroupManagersListManagedInstancesResponse"
	}
	return ""
}

// check reports every field of v that the schema s does not have, or that
// has the wrong JSON type.
func (d *discovery) check(where string, s *schema, v any, errs *[]string) {
	if s.Ref != "" {
		s = d.Schemas[s.Ref]
	}
	bad := func(want string) {
		*errs = append(*errs, fmt.Sprintf("%s: got %T %v, want %s", where, v, v, want))
	}
	switch s.Type {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("object")
			return
		}
		for k, fv := range m {
			if ps, ok := s.Properties[k]; ok {
				d.check(where+"."+k, ps, fv, errs)
			} else if s.AdditionalProperties != nil {
				d.check(where+"["+k+"]", s.AdditionalProperties, fv, errs)
			} else {
				*errs = append(*errs, fmt.Sprintf("%s.%s: no such field in schema %s", where, k, s.ID))
			}
		}
	case "array":
		l, ok := v.([]any)
		if !ok {
			bad("array")
			return
		}
		for i, e := range l {
			d.check(fmt.Sprintf("%s[%d]", where, i), s.Items, e, errs)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			bad("string")
			return
		}
		switch s.Format {
		case "int64":
			if _, err := strconv.ParseInt(str, 10, 64); err != nil {
				bad("int64 as a string")
			}
		case "uint64":
			if _, err := strconv.ParseUint(str, 10, 64); err != nil {
				bad("uint64 as a string")
			}
		}
	case "integer", "number":
		if _, ok := v.(float64); !ok {
			bad(s.Type)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("boolean")
		}
	}
}

// schemaChecker wraps the emulator's handler and checks each JSON answer of
// the Compute API against the discovery schema, failing t on a mismatch.
func schemaChecker(t *testing.T, h http.Handler) http.Handler {
	d, err := loadDiscovery()
	if err != nil {
		t.Fatalf("loading the discovery schema: %v", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/compute/v1/") {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		if rec.Code != http.StatusOK {
			return
		}
		var body map[string]any
		if err := json.NewDecoder(bytes.NewReader(rec.Body.Bytes())).Decode(&body); err != nil {
			t.Errorf("%s %s: answer is not a JSON object: %v", r.Method, r.URL.Path, err)
			return
		}
		name := schemaFor(r.URL.Path, body)
		if name == "" {
			if len(body) != 0 {
				t.Errorf("%s %s: cannot tell the schema of %v", r.Method, r.URL.Path, body)
			}
			return
		}
		s, ok := d.Schemas[name]
		if !ok {
			t.Errorf("%s %s: kind names schema %q, which the discovery document lacks", r.Method, r.URL.Path, name)
			return
		}
		var errs []string
		d.check(name, s, body, &errs)
		for _, e := range errs {
			t.Errorf("%s %s: schema mismatch: %s", r.Method, r.URL.Path, e)
		}
	})
}

func TestSchemaCheckCatchesMismatches(t *testing.T) {
	d, err := loadDiscovery()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		body string
		want string
	}{
		{`{"kind":"compute#instance","name":"a","id":"123"}`, ""},
		{`{"kind":"compute#instance","nmae":"a"}`, "no such field"},
		{`{"kind":"compute#instance","id":123}`, "want string"},
		{`{"kind":"compute#instance","id":"x1"}`, "uint64"},
		{`{"kind":"compute#instance","labels":{"a":1}}`, "want string"},
		{`{"kind":"compute#instance","disks":[{"boot":"yes"}]}`, "want boolean"},
	} {
		var body map[string]any
		json.Unmarshal([]byte(tc.body), &body)
		var errs []string
		d.check("Instance", d.Schemas[schemaFor("", body)], body, &errs)
		got := strings.Join(errs, "; ")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: errors %q, want one containing %q", tc.body, got, tc.want)
		}
	}
}
