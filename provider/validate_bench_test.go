package provider

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/gcefleet/gcefleet/store"
)

// readJSONBefore is readJSON as it was before the exact-key check: the
// same-run baseline of BenchmarkReadJSON.
func readJSONBefore(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// BenchmarkReadJSON decodes a lease request and a batch of 1,000
// machines with readJSON and with the decoder it replaced.
func BenchmarkReadJSON(b *testing.B) {
	leaseBody := `{"request_id":"0123456789abcdef01234567","dimensions":{"os":["linux"],"cpus":["8"]},"term":{"duration":3600000000000}}`
	var ms []string
	for i := range 1000 {
		ms = append(ms, fmt.Sprintf(`{"hostname":"vm-%d","dimensions":{"os":["linux"],"cpus":["8"],"zone":["us-central1-a"]},"connection":{"address":"10.0.%d.%d","port":8443,"ca_cert":"-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"}}`, i, i/256, i%256))
	}
	batchBody := `{"machines":[` + strings.Join(ms, ",") + `]}`
	type batch struct {
		Machines []store.Machine `json:"machines"`
	}
	for _, c := range []struct {
		name, body string
		v          func() any
	}{
		{"lease", leaseBody, func() any { return new(store.LeaseRequest) }},
		{"batch1000", batchBody, func() any { return new(batch) }},
	} {
		for _, d := range []struct {
			name string
			read func(*http.Request, any) error
		}{{"before", readJSONBefore}, {"now", readJSON}} {
			b.Run(c.name+"/"+d.name, func(b *testing.B) {
				b.SetBytes(int64(len(c.body)))
				b.ReportAllocs()
				for b.Loop() {
					r, err := http.NewRequest("POST", "/", strings.NewReader(c.body))
					if err != nil {
						b.Fatal(err)
					}
					if err := d.read(r, c.v()); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
