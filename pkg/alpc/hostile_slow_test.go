//go:build linux && !kalpc_stub

package alpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

func init() {
	hostileHelpers["never-reader"] = helperNeverReader
}

// helperNeverReader ("path") serves a port by hand: it accepts every
// connection with generous limits, then never reads from it again. It runs
// until stdin closes.
func helperNeverReader(path string) error {
	lfd, err := rawListener(path, 16)
	if err != nil {
		return err
	}
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		os.Exit(0)
	}()
	fmt.Println("READY")
	for {
		fd, err := sys.Accept4(lfd)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _, err = readHandshake(ctx, fd)
		if err == nil {
			p := hostileParams
			err = writeHandshake(ctx, fd, wire.TypeAccept, &p, nil)
		}
		cancel()
		if err != nil {
			return err
		}
		// Keep fd open and unread.
	}
}

// sectionBytesMapped sums the sizes of this process's section mappings.
func sectionBytesMapped(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for line := range strings.Lines(string(b)) {
		if !strings.Contains(line, "memfd:kalpc-section") {
			continue
		}
		lo, hi, _ := strings.Cut(strings.Fields(line)[0], "-")
		l, _ := strconv.ParseUint(lo, 16, 64)
		h, _ := strconv.ParseUint(hi, 16, 64)
		total += int64(h - l)
	}
	return total
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestHostileSlowConsumer: the peer accepts the connection and never reads
// its socket. Calls and one-way messages to it fail when their context
// ends, with ctx's error (wrapped in a *LimitError when a limit is what
// they were waiting for); nothing queues without bound; the slow
// connection closes promptly; a second connection's p99 holds.
func TestHostileSlowConsumer(t *testing.T) {
	checkLeaks(t)
	goodPath, _ := startServer(t, "server")
	good, err := Dial(t.Context(), goodPath, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	slowPath := t.TempDir() + "/slow.sock"
	startHelper(t, "never-reader", slowPath)
	baseMapped := sectionBytesMapped(t)
	baseHeap := heapInUse()
	g := startGoodTraffic(t, good)

	const deadline = 100 * time.Millisecond
	const slack = 900 * time.Millisecond
	// call makes one call (or Send) with the deadline and checks it ended
	// on time with the deadline's error; a Send may also succeed, once
	// queued in the socket.
	call := func(t *testing.T, c *Conn, payload []byte, oneWay bool) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), deadline)
		defer cancel()
		start := time.Now()
		var err error
		if oneWay {
			err = c.Send(ctx, payload)
		} else {
			_, err = c.Call(ctx, payload)
		}
		if d := time.Since(start); d > deadline+slack {
			t.Errorf("call to a peer that never reads took %v with a %v deadline", d, deadline)
		}
		if oneWay && err == nil {
			return nil // queued in the socket: Send does not wait for the peer
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call to a peer that never reads = %v; want context.DeadlineExceeded", err)
		}
		return err
	}
	closeFast := func(t *testing.T, c *Conn) {
		t.Helper()
		start := time.Now()
		c.Close()
		if d := time.Since(start); d > time.Second {
			t.Errorf("closing the connection to a peer that never reads took %v", d)
		}
	}

	t.Run("socket buffer full", func(t *testing.T) {
		c, err := Dial(t.Context(), slowPath, nil, &Config{MaxPendingCalls: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer closeFast(t, c)
		payload := make([]byte, 32<<10) // inline: it queues in the socket
		copy(payload, "echo:")
		failedSends := 0
		for i := range 20 {
			if err := call(t, c, payload, i%2 == 1); err != nil && i%2 == 1 {
				failedSends++
			}
		}
		if failedSends == 0 {
			t.Error("every Send to a peer that never reads succeeded: something queues without bound")
		}
		// Concurrent callers all give up on time too.
		errs := make(chan error, 8)
		for range 8 {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				defer cancel()
				_, err := c.Call(ctx, payload)
				errs <- err
			}()
		}
		for range 8 {
			select {
			case err := <-errs:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("concurrent call = %v", err)
				}
			case <-time.After(deadline + slack):
				t.Fatal("a concurrent call outlived its deadline")
			}
		}
	})
	t.Run("request window full", func(t *testing.T) {
		c, err := Dial(t.Context(), slowPath, nil, &Config{MaxPendingCalls: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer closeFast(t, c)
		limited := 0
		for i := range 12 {
			err := call(t, c, []byte("echo:x"), i%3 == 2)
			var le *LimitError
			if errors.As(err, &le) {
				if le.Limit != "MaxPendingCalls" {
					t.Fatalf("limit error %v", err)
				}
				limited++
			}
		}
		// The first 4 calls are in flight (unanswered); the rest wait for
		// a slot and report the limit.
		if limited != 8 {
			t.Errorf("%d of 12 calls reported MaxPendingCalls; want 8", limited)
		}
	})
	t.Run("sections never released", func(t *testing.T) {
		const budget = 8 << 20
		c, err := Dial(t.Context(), slowPath, nil, &Config{MaxSectionBytes: budget})
		if err != nil {
			t.Fatal(err)
		}
		defer closeFast(t, c)
		payload := make([]byte, 1<<20) // through a section
		limited := 0
		for range 16 {
			err := call(t, c, payload, false)
			var le *LimitError
			if errors.As(err, &le) && le.Limit == "MaxSectionBytes" {
				limited++
			}
		}
		if limited == 0 {
			t.Error("no call reported MaxSectionBytes")
		}
		if got := sectionBytesMapped(t) - baseMapped; got > budget {
			t.Errorf("%d bytes of sections mapped for a peer that never releases; budget %d", got, budget)
		}
	})
	t.Run("no deadline", func(t *testing.T) {
		// Calls without a deadline: the first ones fill the peer's socket
		// and wait for answers that never come; the next write waits
		// WriteTimeout, then the connection ends and every call fails
		// with the *LimitError.
		const writeTimeout = 200 * time.Millisecond
		c, err := Dial(t.Context(), slowPath, nil, &Config{WriteTimeout: writeTimeout})
		if err != nil {
			t.Fatal(err)
		}
		defer closeFast(t, c)
		payload := make([]byte, 32<<10)
		errs := make(chan error, 16)
		start := time.Now()
		for range 16 {
			go func() {
				_, err := c.Call(t.Context(), payload)
				errs <- err
			}()
		}
		for range 16 {
			select {
			case err := <-errs:
				var le *LimitError
				if !errors.As(err, &le) || le.Limit != "WriteTimeout" {
					t.Fatalf("call without a deadline to a peer that never reads = %v; want a *LimitError for WriteTimeout", err)
				}
			case <-time.After(writeTimeout + 5*time.Second):
				t.Fatal("a call without a deadline to a peer that never reads outlived WriteTimeout")
			}
		}
		t.Logf("16 calls without a deadline failed after %v: %v", time.Since(start).Round(time.Millisecond), c.Err())
		if !errors.Is(c.Err(), ErrLimit) {
			t.Errorf("connection ended with %v; want the WriteTimeout *LimitError", c.Err())
		}
	})
	g.finish(t, 10, 50*time.Millisecond)
	// Nothing the failed calls made is still held.
	if grew := int64(heapInUse()) - int64(baseHeap); grew > 8<<20 {
		t.Errorf("heap grew by %d bytes over the calls to a peer that never reads", grew)
	}
	dl := time.Now().Add(3 * time.Second)
	for sectionBytesMapped(t) > baseMapped && time.Now().Before(dl) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := sectionBytesMapped(t); n > baseMapped {
		t.Errorf("%d bytes of sections still mapped after closing (baseline %d)", n, baseMapped)
	}
}
