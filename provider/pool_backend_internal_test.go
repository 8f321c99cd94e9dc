package provider

import (
	"context"
	"reflect"
	"testing"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/store"
)

// TestPoolBackend: the provider sets a pool machine's pool_backend to
// its backend and refuses another; a backend sees the demand for its own
// pool machines without it, and not the demand for another's; a request
// for a backend that serves no pool machines is refused by field.
func TestPoolBackend(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := testutil.SelfSigned("fleet CA")
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := testutil.CertPEM(ca)
	s := &Server{st: st, poolBackends: map[string]bool{"gce": true, "gce2": true}}
	m := api.Machine{Hostname: "w-1", Backend: "gce", Dimensions: api.Dimensions{PoolDimension: {"true"}, "instance_id": {"7"}},
		Connection: api.Connection{Address: "10.0.0.1", Port: 8443, CACert: string(caPEM)}}
	fields := map[string]string{}
	if err := s.checkPool(ctx, fields, "", &m); err != nil {
		t.Fatal(err)
	}
	if len(fields) != 0 || !reflect.DeepEqual(m.Dimensions[PoolBackendDimension], []string{"gce"}) {
		t.Errorf("checkPool: %v, dimensions %v; want pool_backend=gce set", fields, m.Dimensions)
	}
	for name, d := range map[string]api.Dimensions{
		"another backend's":  {PoolDimension: {"true"}, PoolBackendDimension: {"gce2"}},
		"not a pool machine": {"os": {"linux"}, PoolBackendDimension: {"gce"}},
	} {
		fields := map[string]string{}
		if err := s.checkPool(ctx, fields, "", &api.Machine{Hostname: "w-2", Backend: "gce", Dimensions: d}); err != nil {
			t.Fatal(err)
		}
		if fields["dimensions."+PoolBackendDimension] == "" {
			t.Errorf("%s: checkPool took pool_backend %v", name, d[PoolBackendDimension])
		}
	}
	for name, tc := range map[string]struct {
		d  api.Dimensions
		ok bool
	}{
		"none":            {api.Dimensions{PoolDimension: {"true"}}, true},
		"a pool backend":  {api.Dimensions{PoolDimension: {"true"}, PoolBackendDimension: {"gce2"}}, true},
		"no such backend": {api.Dimensions{PoolDimension: {"true"}, PoolBackendDimension: {"other"}}, false},
		"without gceboot": {api.Dimensions{PoolBackendDimension: {"gce"}}, false},
	} {
		fields := map[string]string{}
		s.checkPoolRequest(fields, tc.d)
		if (len(fields) == 0) != tc.ok {
			t.Errorf("%s: checkPoolRequest = %v, want ok %v", name, fields, tc.ok)
		}
	}
	sets := []api.DemandSet{
		{Dimensions: api.Dimensions{PoolDimension: {"true"}, PoolBackendDimension: {"gce"}}, Pending: 1},
		{Dimensions: api.Dimensions{PoolDimension: {"true"}, PoolBackendDimension: {"gce2"}}, Pending: 2},
		{Dimensions: api.Dimensions{"os": {"linux"}}, Pending: 3},
	}
	got := poolDemand(sets, "gce")
	want := []api.DemandSet{{Dimensions: api.Dimensions{PoolDimension: {"true"}}, Pending: 1}, {Dimensions: api.Dimensions{"os": {"linux"}}, Pending: 3}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("poolDemand for gce = %v, want %v", got, want)
	}
	if _, ok := sets[0].Dimensions[PoolBackendDimension]; !ok {
		t.Error("poolDemand changed the sets it was given")
	}
}
