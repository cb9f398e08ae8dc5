package alpc

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
)

// BenchmarkRoundTrip measures a kalpc Call against a raw SOCK_SEQPACKET
// ping-pong (the floor for the socket technique), both to a server in
// another process. Each iteration does one round trip of each, interleaved,
// so machine noise hits both alike; the reported ratio is kalpc p50 / raw p50.
func BenchmarkRoundTrip(b *testing.B) {
	kpath, _ := startServer(b, "server")
	rpath := filepath.Join(b.TempDir(), "raw.sock")
	startHelper(b, "raw-echo", rpath)

	c, err := Dial(b.Context(), kpath, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	rfd, err := connect(b.Context(), rpath)
	if err != nil {
		b.Fatal(err)
	}
	defer sys.Close(rfd)

	for _, size := range []int{64, 4 << 10, 60 << 10} {
		b.Run(sizeName(size), func(b *testing.B) {
			// The kalpc request is "echo:" + filler, and the reply is the
			// filler: both directions carry about size bytes, as the raw
			// echo does.
			kreq := append([]byte("echo:"), make([]byte, size-5)...)
			raw := make([]byte, size)
			rbuf := make([]byte, size+64)
			kt := make([]time.Duration, 0, b.N)
			rt := make([]time.Duration, 0, b.N)
			b.SetBytes(int64(2 * size))
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				if _, err := c.Call(b.Context(), kreq); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := sys.Sendmsg(rfd, raw, nil, nil, sys.MsgNoSignal); err != nil {
					b.Fatal(err)
				}
				if _, _, _, err := sys.Recvmsg(rfd, rbuf, nil, 0); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				kt = append(kt, t1.Sub(t0))
				rt = append(rt, t2.Sub(t1))
			}
			kp, rp := p50(kt), p50(rt)
			b.ReportMetric(float64(kp.Nanoseconds()), "kalpc-p50-ns")
			b.ReportMetric(float64(rp.Nanoseconds()), "raw-p50-ns")
			b.ReportMetric(float64(kp)/float64(rp), "kalpc/raw")
		})
	}
}

func p50(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
