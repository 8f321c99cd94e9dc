package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/store"
)

// TestDemandAndOffers: the demand is the queue by set of dimensions, a
// pending request's place is among those of its set, offers stand until
// their ttl and are replaced whole, and AnyMachine finds a machine by a
// subset of its dimensions.
func TestDemandAndOffers(t *testing.T) {
	stores(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		linux := store.Dimensions{"os": {"linux"}, "zone": {"a"}}
		win := store.Dimensions{"os": {"windows"}}
		var ids []string
		for i, d := range []store.Dimensions{linux, win, {"zone": {"a"}, "os": {"linux"}}, linux} {
			l, _, err := s.RequestLease(ctx, "alice", request(string(rune('a'+i)), d))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, l.ID)
		}
		d, err := s.Demand(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(d) != 2 || d[0].Pending != 3 || !d[0].Dimensions.Matches(linux) || !linux.Matches(d[0].Dimensions) || d[1].Pending != 1 || d[1].Dimensions["os"][0] != "windows" {
			t.Fatalf("demand: %+v", d)
		}
		if pos, of, err := s.QueuePosition(ctx, ids[2]); err != nil || pos != 2 || of != 3 {
			t.Errorf("third request, second of its set: %d of %d, %v", pos, of, err)
		}
		if pos, of, err := s.QueuePosition(ctx, ids[1]); err != nil || pos != 1 || of != 1 {
			t.Errorf("the one windows request: %d of %d, %v", pos, of, err)
		}
		if _, err := s.AddMachine(ctx, machine("vm-1", store.Dimensions{"os": {"linux"}, "zone": {"a"}, "cpus": {"2"}})); err != nil {
			t.Fatal(err)
		}
		if pos, of, err := s.QueuePosition(ctx, ids[0]); err != nil || pos != 0 || of != 0 {
			t.Errorf("a fulfilled lease's place: %d of %d, %v; want none", pos, of, err)
		}
		if d, _ := s.Demand(ctx); len(d) != 2 || d[0].Pending+d[1].Pending != 3 {
			t.Errorf("demand after one was fulfilled: %+v", d)
		}
		for _, c := range []struct {
			d    store.Dimensions
			want bool
		}{
			{store.Dimensions{"os": {"linux"}}, true},
			{store.Dimensions{"os": {"linux"}, "cpus": {"2"}}, true},
			{store.Dimensions{"os": {"linux"}, "cpus": {"4"}}, false},
			{store.Dimensions{"gpu": {"t4"}}, false},
		} {
			if got, err := s.AnyMachine(ctx, c.d); err != nil || got != c.want {
				t.Errorf("AnyMachine(%v) = %v, %v; want %v", c.d, got, err, c.want)
			}
		}

		now := time.Now()
		s.Now = func() time.Time { return now }
		if err := s.PutOffers(ctx, "gce", []store.Offer{{Dimensions: linux, Room: 3}, {Dimensions: win}}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.PutOffers(ctx, "other", []store.Offer{{Dimensions: win, Room: 1}}, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := s.PutOffers(ctx, "gce", []store.Offer{{Dimensions: linux, Room: 2}}, time.Minute); err != nil {
			t.Fatal(err)
		}
		os, err := s.Offers(ctx)
		if err != nil || len(os) != 2 || os[0].Backend != "gce" || os[0].Room != 2 || os[1].Backend != "other" {
			t.Fatalf("offers: %+v, %v", os, err)
		}
		now = now.Add(2 * time.Minute)
		if os, err := s.Offers(ctx); err != nil || len(os) != 1 || os[0].Backend != "other" {
			t.Errorf("offers once gce's expired: %+v, %v", os, err)
		}
		if err := s.PutOffers(ctx, "other", nil, time.Hour); err != nil {
			t.Fatal(err)
		}
		if os, err := s.Offers(ctx); err != nil || len(os) != 0 {
			t.Errorf("offers once withdrawn: %+v, %v", os, err)
		}
	})
}
