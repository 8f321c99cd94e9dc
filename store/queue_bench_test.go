package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/store"
)

// BenchmarkAddMachineQueued measures adding a machine that no pending
// request wants, with 10,000 pending requests from 10 clients (1,000
// each, the default cap). "disjoint": the requests ask for os=windows and
// a pool of their client's; "overlap": for os=linux, which the machines
// have, and such a pool, which they do not; "empty": no pending requests,
// for what an add costs anyway. It reports the p99 and p50 of an add.
//
//	go test ./store -run '^$' -bench AddMachineQueued -benchtime 2000x
func BenchmarkAddMachineQueued(b *testing.B) {
	for _, db := range []string{"sqlite", "postgres"} {
		for _, shape := range []string{"empty", "disjoint", "overlap"} {
			b.Run(db+"/"+shape, func(b *testing.B) {
				url := "sqlite:" + filepath.Join(b.TempDir(), "bench.db")
				if db == "postgres" {
					url = testutil.PostgresURL(b)
				}
				ctx := context.Background()
				s, err := store.Open(ctx, url)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				os := "windows"
				if shape == "overlap" {
					os = "linux"
				}
				clients := 10
				if shape == "empty" {
					clients = 0
				}
				// The requests, 64 at a time (the store batches them).
				var wg sync.WaitGroup
				errs := make(chan error, clients)
				for c := range clients {
					for part := range 64 / clients {
						wg.Go(func() {
							for i := part; i < 1000; i += 64 / clients {
								d := store.Dimensions{"os": {os}, "pool": {fmt.Sprint("pool-", c)}}
								if _, _, err := s.RequestLease(ctx, fmt.Sprint("client-", c), request(fmt.Sprint(i), d)); err != nil {
									errs <- err
									return
								}
							}
						})
					}
				}
				wg.Wait()
				close(errs)
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
				if err := s.Maintain(ctx); err != nil {
					b.Fatal(err)
				}
				lat := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for i := range b.N {
					t := time.Now()
					m, err := s.AddMachine(ctx, machine(fmt.Sprintf("vm-%07d", i), linux8))
					if err != nil || m.LeaseID != "" {
						b.Fatalf("add: %+v, %v; want no lease", m, err)
					}
					lat = append(lat, time.Since(t))
				}
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			})
		}
	}
}
