//go:build linux && !kalpc_stub

package alpcgrpc_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// BenchmarkUnary compares unary calls of interop's TestService, server in
// another process: native mode, compatibility mode, and grpc-go over a
// plain Unix socket. Each sub-benchmark reports the median round trip
// (p50-µs); the parent logs the ratios. Run:
//
//	go test -run '^$' -bench Unary -benchtime 3000x ./pkg/alpc/alpcgrpc/
func BenchmarkUnary(b *testing.B) {
	conns := map[string]grpc.ClientConnInterface{}
	for _, mode := range []string{"unix", "compat", "native"} {
		path, _ := startServer(b, mode+"-server")
		switch mode {
		case "unix":
			cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = cc.Close() })
			conns[mode] = cc
		case "compat":
			cc := dialCompat(b, path)
			b.Cleanup(func() { _ = cc.Close() })
			conns[mode] = cc
		case "native":
			cc := dialNative(b, path)
			b.Cleanup(func() { _ = cc.Close() })
			conns[mode] = cc
		}
	}
	p50 := map[string]time.Duration{}
	sizes := []int{64, 4 << 10, 1 << 20, 3 << 20, 16 << 20}
	for _, size := range sizes {
		for _, mode := range []string{"unix", "compat", "native"} {
			name := fmt.Sprintf("%s/%s", sizeName(size), mode)
			b.Run(name, func(b *testing.B) {
				tc := testgrpc.NewTestServiceClient(conns[mode])
				req := &testgrpc.SimpleRequest{ResponseSize: int32(size), Payload: &testgrpc.Payload{Body: make([]byte, size)}}
				ctx := b.Context()
				big := grpc.MaxCallRecvMsgSize(benchMaxMsg)
				// Warm up: connect, fill caches.
				for range 50 {
					if _, err := tc.UnaryCall(ctx, req, big); err != nil {
						b.Fatal(err)
					}
				}
				lat := make([]time.Duration, 0, b.N)
				b.SetBytes(int64(2 * size))
				b.ResetTimer()
				for b.Loop() {
					start := time.Now()
					if _, err := tc.UnaryCall(ctx, req, big); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(start))
				}
				b.StopTimer()
				slices.Sort(lat)
				m := lat[len(lat)/2]
				p50[name] = m
				b.ReportMetric(float64(m.Nanoseconds())/1e3, "p50-µs")
			})
		}
	}
	for _, size := range sizes {
		s := sizeName(size)
		unix, compat, native := p50[s+"/unix"], p50[s+"/compat"], p50[s+"/native"]
		if unix == 0 || native == 0 || compat == 0 {
			continue
		}
		b.Logf("%s unary p50: unix %v, compat %v, native %v; unix/native %.2fx, unix/compat %.2fx",
			s, unix, compat, native, float64(unix)/float64(native), float64(unix)/float64(compat))
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
