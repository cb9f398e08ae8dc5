//go:build linux && !kalpc_stub

package alpc

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// hostileHelpers are child processes that play hostile peers, started with
// startHelper. Their argument is a "|"-separated list.
var hostileHelpers = map[string]func(arg string) error{}

// splitArg splits a helper argument into its fields.
func splitArg(arg string, n int) ([]string, error) {
	f := strings.Split(arg, "|")
	if len(f) != n {
		return nil, fmt.Errorf("helper argument %q: want %d fields", arg, n)
	}
	return f, nil
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// hostileParams are the limits a hostile peer announces: generous, so that
// only the victim's own limits apply.
var hostileParams = wire.Params{
	InlineLimit:     DefaultInlineLimit,
	MaxPendingCalls: 1 << 20,
	MaxMessageSize:  DefaultMaxMessageSize,
	MaxSectionBytes: DefaultMaxSectionBytes,
	Features:        wire.FeatureSections,
}

// rawConnect connects to path and completes a valid handshake by hand,
// returning the raw (blocking) socket, for helpers that play hostile peers.
func rawConnect(ctx context.Context, path string, msg []byte) (int, error) {
	return rawConnectParams(ctx, path, hostileParams, msg)
}

// rawConnectParams is rawConnect announcing p.
func rawConnectParams(ctx context.Context, path string, p wire.Params, msg []byte) (int, error) {
	fd, err := connect(ctx, path)
	if err != nil {
		return -1, err
	}
	if err := writeHandshake(ctx, fd, wire.TypeConnect, &p, msg); err != nil {
		sys.Close(fd)
		return -1, err
	}
	h, _, err := readHandshake(ctx, fd)
	if err == nil && h.Type != wire.TypeAccept {
		err = fmt.Errorf("handshake answered with %v", h.Type)
	}
	if err == nil {
		err = sys.SetNonblock(fd, false)
	}
	if err != nil {
		sys.Close(fd)
		return -1, err
	}
	return fd, nil
}

// writeStats writes a helper's result for the parent test to read.
func writeStats(file string, format string, args ...any) error {
	return os.WriteFile(file, fmt.Appendf(nil, format, args...), 0o600)
}

// waitForFile waits for a helper's stats file and returns its contents.
func waitForFile(t *testing.T, file string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(file)
		if err == nil && len(b) > 0 {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("helper did not write %s within %v", file, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// latencies records call durations.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// quantile returns the q quantile (0 < q <= 1) and the sample count.
func (l *latencies) quantile(q float64) (time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s[min(int(float64(len(s))*q), len(s)-1)], len(s)
}

// echoCalls makes sequential echo calls on c, recording their latency,
// until n calls are done (n > 0) or stop is closed. Every call must succeed.
func echoCalls(ctx context.Context, c *Conn, n int, stop <-chan struct{}) (*latencies, error) {
	lat := &latencies{}
	msg := []byte("echo:ping")
	for i := 0; n <= 0 || i < n; i++ {
		if stop != nil {
			select {
			case <-stop:
				return lat, nil
			default:
			}
		}
		start := time.Now()
		out, err := c.Call(ctx, msg)
		if err != nil {
			return lat, fmt.Errorf("good call %d: %w", i, err)
		}
		if string(out) != "ping" {
			return lat, fmt.Errorf("good call %d answered %q", i, out)
		}
		lat.add(time.Since(start))
	}
	return lat, nil
}

// goodTraffic measures a good connection's call latency before an attack,
// then keeps calling in the background while it runs. finish stops the
// background calls and checks that every call succeeded, none hung, and
// the median during the attack stayed within factor times the one before
// (or under floor, whichever is larger). The median, not the p99: the
// question is whether the attack starves the good connection, and a
// -race run on a loaded 2-core CI machine has GC and scheduling hiccups
// of its own (a 69 ms p99 over 32 calls failed CI once); the p99 is
// logged, and latency itself is measured by the benchmarks.
type goodTraffic struct {
	before    time.Duration // median
	beforeP99 time.Duration
	stop      chan struct{}
	done      chan error
	during    *latencies
}

func startGoodTraffic(t *testing.T, c *Conn) *goodTraffic {
	t.Helper()
	before, err := echoCalls(t.Context(), c, 300, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := &goodTraffic{stop: make(chan struct{}), done: make(chan error, 1)}
	g.before, _ = before.quantile(0.5)
	g.beforeP99, _ = before.quantile(0.99)
	go func() {
		l, err := echoCalls(t.Context(), c, 0, g.stop)
		g.during = l // read after done delivers
		g.done <- err
	}()
	return g
}

// goodCallHang is the slowest a good call may be during an attack: far
// above any scheduling hiccup, far below the test timeouts.
const goodCallHang = 2 * time.Second

func (g *goodTraffic) finish(t *testing.T, factor float64, floor time.Duration) {
	t.Helper()
	close(g.stop)
	if err := <-g.done; err != nil {
		t.Errorf("good connection during the attack: %v", err)
	}
	during, n := g.during.quantile(0.5)
	duringP99, _ := g.during.quantile(0.99)
	worst, _ := g.during.quantile(1)
	t.Logf("good connection: call median %v before, %v during the attack; p99 %v before, %v during; slowest %v (%d calls)", g.before, during, g.beforeP99, duringP99, worst, n)
	if n < 10 {
		t.Errorf("good connection made only %d calls during the attack", n)
	}
	if limit := max(time.Duration(float64(g.before)*factor), floor); during > limit {
		t.Errorf("good connection's median call during the attack took %v, over %v (%.0fx the %v before, floor %v)", during, limit, factor, g.before, floor)
	}
	if worst > goodCallHang {
		t.Errorf("a good call took %v during the attack (a hang: over %v)", worst, goodCallHang)
	}
}

// resourceSampler records the process's peak descriptor and goroutine
// counts and heap (live and not yet collected objects) while an attack runs.
type resourceSampler struct {
	stop            chan struct{}
	done            chan struct{}
	maxFDs, maxGors int
	maxHeap         uint64
}

func sampleResources() *resourceSampler {
	r := &resourceSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		heap := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
				r.maxFDs = max(r.maxFDs, len(ents))
			}
			r.maxGors = max(r.maxGors, runtime.NumGoroutine())
			metrics.Read(heap) // unlike ReadMemStats, does not stop the world
			r.maxHeap = max(r.maxHeap, heap[0].Value.Uint64())
			select {
			case <-r.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return r
}

func (r *resourceSampler) finish() (maxFDs, maxGoroutines int, maxHeap uint64) {
	close(r.stop)
	<-r.done
	return r.maxFDs, r.maxGors, r.maxHeap
}

func countFDs(t *testing.T) int { return len(openFDs(t)) }

// logCapture records what the library logs (at every level), for tests
// that check a clear error was reported where no caller receives it (a
// failed handshake is only logged).
type logCapture struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logCapture) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

// install makes l the default logger until the returned func is called.
// Listeners and Conns take their logger when created.
func (l *logCapture) install() func() {
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return func() { slog.SetDefault(old) }
}

func (l *logCapture) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.buf.String(), s)
}

// listenWithGood listens on a port with cfg, accepts every connection into
// conns (buffered for backlog), and connects a well-behaved client with
// clientCfg: good is its end, goodServer the port's. Both are closed by the
// test's cleanups, before checkLeaks' checks (a test may close them earlier
// to compare a baseline).
func listenWithGood(t *testing.T, cfg, clientCfg *Config, backlog int) (path string, conns chan *Conn, good, goodServer *Conn) {
	t.Helper()
	l, path := listenTest(t, cfg)
	conns = make(chan *Conn, backlog)
	go acceptInto(l, conns)
	good, err := Dial(t.Context(), path, nil, clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	goodServer = <-conns
	t.Cleanup(func() {
		good.Close()
		goodServer.Close()
	})
	return path, conns, good, goodServer
}

// answerOneHandshake plays a hand-written server: it listens on a port,
// reads one client's connection message and answers it with reply, then
// hangs up. It returns the port's path.
func answerOneHandshake(t *testing.T, reply []byte) string {
	t.Helper()
	path := t.TempDir() + "/evil.sock"
	lfd, err := rawListener(path, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close(lfd) })
	go func() {
		fd, err := sys.Accept4(lfd)
		if err != nil {
			return
		}
		defer sys.Close(fd)
		_, _, _ = readHandshake(context.Background(), fd)
		_ = sys.Sendmsg(fd, reply, nil, nil, sys.MsgNoSignal)
	}()
	return path
}
