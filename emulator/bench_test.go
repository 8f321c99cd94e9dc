package emulator_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/emulator"
)

func benchService(b *testing.B) (*emulator.Emulator, *compute.Service) {
	emu := emulator.New(emulator.Options{})
	srv := httptest.NewServer(emu)
	b.Cleanup(func() {
		emu.Close()
		srv.Close()
	})
	svc, err := compute.NewService(context.Background(), option.WithEndpoint(srv.URL+"/compute/v1/"), option.WithoutAuthentication())
	if err != nil {
		b.Fatal(err)
	}
	return emu, svc
}

// BenchmarkInsertToDone measures instance inserts carried to DONE through
// the REST (discovery) client, by 16 concurrent callers, each waiting on its
// operation with zoneOperations.wait. Target: 2,000 inserts/s.
func BenchmarkInsertToDone(b *testing.B) {
	_, svc := benchService(b)
	var n atomic.Int64
	b.SetParallelism(8) // 16 callers on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			name := fmt.Sprintf("bench-%d", n.Add(1))
			op, err := svc.Instances.Insert("bench", zone, vm(name)).Do()
			if err != nil {
				b.Error(err)
				return
			}
			for op.Status != "DONE" {
				if op, err = svc.ZoneOperations.Wait("bench", zone, op.Name).Do(); err != nil {
					b.Error(err)
					return
				}
			}
			if op.Error != nil {
				b.Error(op.Error.Errors[0].Message)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "inserts/s")
}

// BenchmarkFilteredList10k lists one page of 500 with a label filter over a
// zone of 10,000 instances. Target: under 50 ms a page.
func BenchmarkFilteredList10k(b *testing.B) {
	_, svc := benchService(b)
	props := &compute.InstanceProperties{
		MachineType:       "e2-micro",
		Disks:             []*compute.AttachedDisk{{Boot: true, InitializeParams: &compute.AttachedDiskInitializeParams{SourceImage: "projects/cos-cloud/global/images/family/cos-stable"}}},
		NetworkInterfaces: []*compute.NetworkInterface{{}},
	}
	for i := range 10 {
		props.Labels = map[string]string{"shard": fmt.Sprint(i % 2)}
		op, err := svc.Instances.BulkInsert("bench", zone, &compute.BulkInsertInstanceResource{Count: 1000, NamePattern: fmt.Sprintf("s%d-####", i), InstanceProperties: props}).Do()
		if err != nil {
			b.Fatal(err)
		}
		for op.Status != "DONE" {
			op, _ = svc.ZoneOperations.Wait("bench", zone, op.Name).Do()
		}
	}
	b.ResetTimer()
	for b.Loop() {
		l, err := svc.Instances.List("bench", zone).Filter(`labels.shard = "1"`).MaxResults(500).Do()
		if err != nil {
			b.Fatal(err)
		}
		if len(l.Items) != 500 || l.NextPageToken == "" {
			b.Fatalf("page of %d, token %q", len(l.Items), l.NextPageToken)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/page")
}

// BenchmarkIdleInstanceMemory measures the heap that an idle instance
// without a process costs. Target: under 20 KiB.
func BenchmarkIdleInstanceMemory(b *testing.B) {
	const count = 2000
	for b.Loop() {
		_, svc := benchService(b)
		props := &compute.InstanceProperties{
			MachineType:       "e2-micro",
			Labels:            map[string]string{"fleet": "idle", "owner": "bench"},
			Disks:             []*compute.AttachedDisk{{Boot: true, InitializeParams: &compute.AttachedDiskInitializeParams{SourceImage: "projects/cos-cloud/global/images/family/cos-stable"}}},
			NetworkInterfaces: []*compute.NetworkInterface{{}},
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var wg sync.WaitGroup
		for i := range count / 500 {
			wg.Go(func() {
				op, err := svc.Instances.BulkInsert("bench", zone, &compute.BulkInsertInstanceResource{Count: 500, NamePattern: fmt.Sprintf("m%d-###", i), InstanceProperties: props}).Do()
				if err != nil {
					b.Error(err)
					return
				}
				for op.Status != "DONE" {
					op, _ = svc.ZoneOperations.Wait("bench", zone, op.Name).Do()
				}
			})
		}
		wg.Wait()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/count/1024, "KiB/instance")
	}
}
