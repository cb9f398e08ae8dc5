//go:build linux && !kalpc_stub

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

// BenchmarkLarge measures large calls in one run, interleaved per
// iteration so that machine noise hits all alike:
//
//   - memcpy: a plain copy() of the payload in this process, the physical
//     limit for one copy;
//   - copy-in: a Call whose payload the sender copies into its section and
//     the receiver reads in place (a View): one copy, like memcpy;
//   - copy-both: a Call received with a private copy (Request.Payload, the
//     default): two copies;
//   - loan: a loaned Call (written in place, read in place): no copy;
//   - 64B: a small Call, the reference for the loan's flatness.
//
// Replies are 8 bytes. Ratios are of p50 bandwidths (or times).
func BenchmarkLarge(b *testing.B) {
	path, _ := startServer(b, "server")
	c, err := Dial(b.Context(), path, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	small := []byte("echo:" + string(make([]byte, 59)))
	for _, size := range []int{1 << 20, 16 << 20, 64 << 20} {
		b.Run(sizeName(size), func(b *testing.B) {
			in := append([]byte("len:"), pattern(size)...)
			both := append([]byte("copy:"), pattern(size)...)
			dst := make([]byte, len(in))
			var tMem, tIn, tBoth, tLoan, tSmall []time.Duration
			b.SetBytes(int64(size))
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				copy(dst, in)
				t1 := time.Now()
				if _, err := c.Call(b.Context(), in); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if _, err := c.Call(b.Context(), both); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				l, err := c.Loan(b.Context(), len(in))
				if err != nil {
					b.Fatal(err)
				}
				copy(l.Bytes(), "len:")
				if _, err := c.CallLoan(b.Context(), l); err != nil {
					b.Fatal(err)
				}
				t4 := time.Now()
				if _, err := c.Call(b.Context(), small); err != nil {
					b.Fatal(err)
				}
				t5 := time.Now()
				tMem = append(tMem, t1.Sub(t0))
				tIn = append(tIn, t2.Sub(t1))
				tBoth = append(tBoth, t3.Sub(t2))
				tLoan = append(tLoan, t4.Sub(t3))
				tSmall = append(tSmall, t5.Sub(t4))
			}
			gbps := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e9 }
			mem, cin, cboth, loan, sm := p50(tMem), p50(tIn), p50(tBoth), p50(tLoan), p50(tSmall)
			b.ReportMetric(gbps(mem), "memcpy-GB/s")
			b.ReportMetric(gbps(cin), "copy-in-GB/s")
			b.ReportMetric(gbps(cboth), "copy-both-GB/s")
			b.ReportMetric(gbps(cin)/gbps(mem), "copy-in/memcpy")
			b.ReportMetric(gbps(cboth)/gbps(mem), "copy-both/memcpy")
			b.ReportMetric(float64(loan.Nanoseconds()), "loan-p50-ns")
			b.ReportMetric(float64(sm.Nanoseconds()), "64B-p50-ns")
			b.ReportMetric(float64(loan)/float64(sm), "loan/64B")
		})
	}
}
