//go:build linux && !kalpc_stub

package alpc

import (
	"encoding/binary"
	"syscall"
	"testing"
	"time"
)

// BenchmarkCallPayload measures the default path, both ways: Call with the
// default Config, a handler in another process that takes Request.Payload
// and echoes it, and the caller getting its own copy of the reply. Per
// iteration it reports p50 and mean round trips and the minor faults of
// each process (getrusage: pages made present, by a fault during a copy or
// by madvise MADV_POPULATE_WRITE; fresh memory is what makes a large
// private copy slow).
func BenchmarkCallPayload(b *testing.B) {
	path, _ := startServer(b, "server-payload")
	c, err := Dial(b.Context(), path, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	stats := func() (faults, csw uint64) {
		out, err := c.Call(b.Context(), []byte(statsVerb))
		if err != nil || len(out) != 16 {
			b.Fatalf("stats: %v (%d bytes)", err, len(out))
		}
		return binary.LittleEndian.Uint64(out), binary.LittleEndian.Uint64(out[8:])
	}
	for _, size := range []int{64, 60 << 10, 1 << 20, 16 << 20} {
		b.Run(sizeName(size), func(b *testing.B) {
			req := pattern(size)
			times := make([]time.Duration, 0, 1024)
			var ru0, ru1 syscall.Rusage
			sf0, _ := stats()
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.SetBytes(int64(2 * size))
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				t0 := time.Now()
				out, err := c.Call(b.Context(), req)
				if err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(t0))
				if len(out) != size {
					b.Fatalf("reply of %d bytes, want %d", len(out), size)
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			sf1, _ := stats()
			n := float64(len(times))
			b.ReportMetric(float64(p50(times).Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(elapsed.Nanoseconds())/n, "mean-ns")
			b.ReportMetric(float64(ru1.Minflt-ru0.Minflt)/n, "client-faults/op")
			b.ReportMetric(float64(sf1-sf0)/n, "server-faults/op")
		})
	}
}
