//go:build linux && !kalpc_stub

package alpc

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// chaosIterations is how many kill -9 rounds TestChaos runs
// (KALPC_CHAOS_ITERATIONS; `make chaos` runs more).
func chaosIterations(t *testing.T) int {
	if s := os.Getenv("KALPC_CHAOS_ITERATIONS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("KALPC_CHAOS_ITERATIONS: %v", err)
		}
		return n
	}
	if testing.Short() {
		return 50
	}
	return 1000
}

// spawn starts helper name without waiting for it to be ready, so that a
// kill can land anywhere, even before it connects.
func spawn(t *testing.T, name, arg string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", arg)
	cmd.Env = append(os.Environ(), helperEnv+"="+name)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// TestChaos kills the peer with SIGKILL at random points — while it
// connects, calls, transfers sections, sends loans or tears down — on either
// side, again and again. After every round this process must be back to
// its baseline: descriptors, section mappings and goroutines.
func TestChaos(t *testing.T) {
	checkLeaks(t)
	baseMaps := sectionMaps(t)
	// The server side lives in this process for half the rounds.
	l, path := listenTest(t, &Config{Handler: testHandler(nil)})
	conns := make(chan *Conn, 16)
	go acceptInto(l, conns)
	// For the other half this process is the client of a server child.
	serverPath := filepath.Join(t.TempDir(), "chaos-server.sock")
	baseGoroutines := runtime.NumGoroutine()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	iterations := chaosIterations(t)
	start := time.Now()
	for i := range iterations {
		delay := time.Duration(rng.IntN(20_000)) * time.Microsecond
		if i%2 == 0 {
			// The peer is a client: kill it at a random point.
			cmd := spawn(t, "chaos-client", path)
			time.Sleep(delay)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			// Drain every server-side connection it got to open; each must
			// end on its own.
			drainConns(t, conns)
		} else {
			// The peer is a server: this process runs calls against it.
			_ = os.Remove(serverPath)
			cmd := spawn(t, "server", serverPath)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			done := make(chan struct{})
			go func() {
				defer close(done)
				var c *Conn
				var err error
				for ctx.Err() == nil {
					if c, err = Dial(ctx, serverPath, nil, &Config{Handler: testHandler(nil)}); err == nil {
						break
					}
					time.Sleep(time.Millisecond)
				}
				if c == nil {
					return
				}
				defer c.Close()
				_ = chaosOps(ctx, c, int64(i))
			}()
			time.Sleep(delay)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: operations against a killed server did not end", i)
			}
		}
		if i%100 == 99 || i == iterations-1 {
			drainConns(t, conns)
			checkBaseline(t, i, baseMaps, baseGoroutines)
		}
	}
	t.Logf("%d kill -9 rounds in %v", iterations, time.Since(start).Round(time.Millisecond))
}

// drainConns waits for queued server-side connections to end and closes them.
func drainConns(t *testing.T, conns chan *Conn) {
	t.Helper()
	for {
		select {
		case c := <-conns:
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("a connection to a killed client did not end")
			}
			c.Close()
		case <-time.After(20 * time.Millisecond):
			return
		}
	}
}

// checkBaseline fails if section mappings or goroutines stay above their
// baseline (descriptors are checked by checkLeaks at the end).
func checkBaseline(t *testing.T, round, baseMaps, baseGoroutines int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for (sectionMaps(t) > baseMaps || runtime.NumGoroutine() > baseGoroutines) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := sectionMaps(t); n > baseMaps {
		t.Fatalf("after round %d: %d section mappings (baseline %d)", round, n, baseMaps)
	}
	if n := runtime.NumGoroutine(); n > baseGoroutines {
		t.Fatalf("after round %d: %d goroutines (baseline %d)", round, n, baseGoroutines)
	}
}
