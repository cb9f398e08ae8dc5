//go:build linux && !kalpc_stub

package alpc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// soakDuration is how long TestSoak runs: KALPC_SOAK_DURATION (for example
// "2m" in CI, "1h" with `make soak`), 20s by default, skipped with -short.
func soakDuration(t *testing.T) time.Duration {
	if s := os.Getenv("KALPC_SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("KALPC_SOAK_DURATION: %v", err)
		}
		return d
	}
	if testing.Short() {
		t.Skip("soak skipped in -short mode")
	}
	return 20 * time.Second
}

type soakSample struct {
	at                        time.Duration
	rssKiB, heapKiB           int
	fds, maps, goroutines, ok int
}

func heapKiB() int {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int(ms.HeapAlloc >> 10)
}

func rssKiB(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// TestSoak runs random traffic (payloads from 0 to 64 MiB, verified by
// hash) against a server process while clients connect and are killed at
// random, and samples memory, descriptors, section mappings and goroutines
// once a second. It fails if any of them grows.
func TestSoak(t *testing.T) {
	duration := soakDuration(t)
	checkLeaks(t)
	sample := func(start time.Time, ok int) soakSample {
		return soakSample{at: time.Since(start).Round(time.Second), rssKiB: rssKiB(t), heapKiB: heapKiB(), fds: len(openFDs(t)),
			maps: sectionMaps(t), goroutines: runtime.NumGoroutine(), ok: ok}
	}
	runtime.GC()
	debug.FreeOSMemory()
	start := time.Now()
	base := sample(start, 0)

	serverPath, _ := startServer(t, "server")
	l, path := listenTest(t, &Config{Handler: testHandler(nil)})
	conns := make(chan *Conn, 64)
	go acceptInto(l, conns)

	ctx, cancel := context.WithTimeout(t.Context(), duration)
	defer cancel()
	var mu sync.Mutex
	transfers := 0
	var wg sync.WaitGroup
	// Traffic: two clients of the server process, reconnecting now and then.
	for w := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for ctx.Err() == nil {
				c, err := Dial(ctx, serverPath, nil, nil)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("dial: %v", err)
					}
					return
				}
				for range 1 + rng.IntN(20) {
					n := rng.IntN(64 << 20)
					if rng.IntN(4) != 0 {
						n = rng.IntN(1 << 20)
					}
					data := pattern(n)
					got, err := c.Call(ctx, append([]byte("sha:"), data...))
					if err != nil {
						if ctx.Err() == nil {
							t.Errorf("call of %d bytes: %v", n, err)
						}
						break
					}
					if want := sha256.Sum256(data); !bytes.Equal(got, want[:]) {
						t.Errorf("call of %d bytes: hash mismatch", n)
					}
					mu.Lock()
					transfers++
					mu.Unlock()
				}
				c.Close()
			}
		})
	}
	// Chaos: clients of this process killed at random.
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
		for ctx.Err() == nil {
			cmd := spawn(t, "chaos-client", path)
			time.Sleep(time.Duration(50+rng.IntN(450)) * time.Millisecond)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			drainConns(t, conns)
		}
	})
	var samples []soakSample
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
			mu.Lock()
			n := transfers
			mu.Unlock()
			samples = append(samples, sample(start, n))
		}
	}
	wg.Wait()
	drainConns(t, conns)

	runtime.GC()
	debug.FreeOSMemory()
	var final soakSample
	deadline := time.Now().Add(5 * time.Second)
	for {
		final = sample(start, transfers)
		if (final.maps <= base.maps && final.goroutines <= base.goroutines+4) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var report strings.Builder
	fmt.Fprintf(&report, "%8s %10s %10s %5s %5s %10s %10s\n", "t", "rss KiB", "heap KiB", "fds", "maps", "goroutines", "transfers")
	for _, s := range append(append([]soakSample{base}, samples...), final) {
		fmt.Fprintf(&report, "%8v %10d %10d %5d %5d %10d %10d\n", s.at, s.rssKiB, s.heapKiB, s.fds, s.maps, s.goroutines, s.ok)
	}
	t.Logf("soak for %v:\n%s", duration, report.String())
	if final.maps > base.maps {
		t.Errorf("section mappings grew: %d → %d", base.maps, final.maps)
	}
	// The listener's accept loop and acceptInto remain until cleanup.
	if final.goroutines > base.goroutines+4 {
		t.Errorf("goroutines grew: %d → %d", base.goroutines, final.goroutines)
	}
	// Resident memory is reported but not asserted: the race detector's
	// shadow memory is never returned. The Go heap after a collection and
	// the section mappings above are what would show a leak.
	if final.heapKiB > base.heapKiB+64<<10 {
		t.Errorf("heap grew: %d KiB → %d KiB", base.heapKiB, final.heapKiB)
	}
	if transfers == 0 {
		t.Error("no transfer completed")
	}
}
