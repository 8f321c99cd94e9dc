package rpc_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkCall measures a small call's round trip over loopback TLS with
// HTTP/2, client and server in this process.
func BenchmarkCall(b *testing.B) {
	p := serve(b)
	ctx := context.Background()
	var sum int
	for b.Loop() {
		if err := p.client.Call(ctx, p.base, "Math.Add", [2]int{1, 2}, &sum); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCallParallel measures throughput with concurrent callers.
func BenchmarkCallParallel(b *testing.B) {
	p := serve(b)
	ctx := context.Background()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		var sum int
		for pb.Next() {
			if err := p.client.Call(ctx, p.base, "Math.Add", [2]int{1, 2}, &sum); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPlainHTTP2 is the floor under BenchmarkCall: the same TLS and
// HTTP/2 with a handler that does nothing.
func BenchmarkPlainHTTP2(b *testing.B) {
	p := serve(b)
	p.srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	})
	for b.Loop() {
		resp, err := p.client.HTTP.Post(p.base+"/x", "application/octet-stream", strings.NewReader("x"))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
