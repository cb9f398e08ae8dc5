//go:build linux && !kalpc_stub

package alpc

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

func init() {
	hostileHelpers["deaf-client"] = helperDeafClient
}

// helperDeafClient ("path|verb|size|count|statsfile") connects to the
// port and sends count requests ("<verb>:<size>", each with a new id; count
// 0 means without end, ignoring the request window) as fast as the port
// takes them, never reading anything: a client whose socket receive buffer
// fills with the answers (or callbacks) it never reads. When the port
// hangs up it writes how many requests it sent, then waits for stdin to
// close.
func helperDeafClient(arg string) error {
	f, err := splitArg(arg, 5)
	if err != nil {
		return err
	}
	path, verb, size, count, stats := f[0], f[1], atoi(f[2]), atoi(f[3]), f[4]
	fd, err := rawConnect(context.Background(), path, nil)
	if err != nil {
		return err
	}
	defer sys.Close(fd)
	fmt.Println("READY")
	msg := header(wire.TypeRequest, 0, 0, fmt.Appendf(nil, "%s:%d", verb, size))
	start := time.Now()
	sent := 0
	for id := uint64(1); count == 0 || sent < count; id++ {
		binary.LittleEndian.PutUint64(msg[8:], id) // the header's id field
		err := sys.Sendmsg(fd, msg, nil, nil, sys.MsgNoSignal)
		if err != nil {
			if !errors.Is(err, sys.EPIPE) && !errors.Is(err, sys.ECONNRESET) {
				return fmt.Errorf("sendmsg: %w", err)
			}
			break
		}
		sent++
	}
	if count != 0 && sent == count {
		// Wait for the hang-up (poll reports POLLHUP whatever the events).
		if err := sys.WaitFD(context.Background(), fd, 0); err != nil {
			return err
		}
	}
	if err := writeStats(stats, "sent=%d hangup-after=%v", sent, time.Since(start).Round(time.Millisecond)); err != nil {
		return err
	}
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return nil
}

// deafHandler serves the deaf client: "echo:n" replies with n bytes;
// "callback:n" calls the client back with n bytes first (with no deadline:
// only the connection's own limits end it); the good client's "echo:x"
// calls are echoed.
func deafHandler() Handler {
	return HandlerFunc(func(ctx context.Context, req *Request) ([]byte, error) {
		verb, arg, _ := strings.Cut(string(req.Payload()), ":")
		n, _ := strconv.Atoi(arg) // 0 for the good client's text
		switch {
		case verb == "echo" && n == 0:
			return []byte(arg), nil // the good client's echo:ping
		case verb == "echo":
			return make([]byte, n), nil
		case verb == "callback":
			if _, err := req.Conn().Call(ctx, append([]byte("echo:"), make([]byte, n)...)); err != nil {
				return nil, err
			}
			return []byte("called back"), nil
		}
		return nil, Errorf(CodeInvalidArgument, "unknown verb %q", verb)
	})
}

// TestHostileSlowReader: a client process sends requests and never reads
// what the port sends back (answers, or callbacks the handler makes), so
// its socket receive buffer fills. The port's writes to it wait at most
// WriteTimeout, then that connection ends with a *LimitError naming
// WriteTimeout; meanwhile at most MaxConcurrentHandlers answers are held
// and at most MaxPendingCalls requests queued (a client sending beyond
// that is cut off as a protocol violation), so memory, goroutines and
// descriptors stay bounded; the reader never blocks, and another
// connection's p99 holds before and during.
func TestHostileSlowReader(t *testing.T) {
	const (
		window       = 64
		handlers     = 16
		writeTimeout = 300 * time.Millisecond
	)
	for _, tt := range []struct {
		name  string
		verb  string
		size  int
		count int // requests the client sends; 0: without end
		// wants is what ends the deaf connection: the write timeout while
		// an answer or callback waits for room in its socket, or the
		// request window, if the client floods requests faster than the
		// port's writes fill its buffer.
		wants []string
	}{
		{"flood, small answers", "echo", 64, 0, []string{"WriteTimeout", "exceeded MaxPendingCalls"}},
		{"flood, inline answers", "echo", 60 << 10, 0, []string{"WriteTimeout", "exceeded MaxPendingCalls"}},
		{"flood, callbacks", "callback", 32 << 10, 0, []string{"WriteTimeout", "exceeded MaxPendingCalls"}},
		{"within the window, inline answers", "echo", 60 << 10, window, []string{"WriteTimeout"}},
		{"within the window, callbacks", "callback", 32 << 10, window, []string{"WriteTimeout"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			path, conns, good, _ := listenWithGood(t, &Config{
				Handler: deafHandler(), MaxPendingCalls: window, MaxConcurrentHandlers: handlers,
				WriteTimeout: writeTimeout,
			}, nil, 2)
			baseFDs, baseGors, baseHeap := countFDs(t), runtime.NumGoroutine(), heapInUse()

			g := startGoodTraffic(t, good)
			res := sampleResources()
			stats := filepath.Join(t.TempDir(), "stats")
			start := time.Now()
			startHelper(t, "deaf-client", fmt.Sprintf("%s|%s|%d|%d|%s", path, tt.verb, tt.size, tt.count, stats))
			deaf := <-conns
			defer deaf.Close()
			select {
			case <-deaf.Done():
			case <-time.After(10 * time.Second):
				maxFDs, maxGors, maxHeap := res.finish()
				t.Fatalf("the port still writes to a client that never reads after 10s (peak %d goroutines, baseline %d; %d fds, baseline %d; heap +%d bytes)",
					maxGors, baseGors, maxFDs, baseFDs, int64(maxHeap)-int64(baseHeap))
			}
			ended := time.Since(start)
			result := waitForFile(t, stats, 10*time.Second)
			maxFDs, maxGors, maxHeap := res.finish()
			g.finish(t, 10, 50*time.Millisecond)
			err := deaf.Err()
			t.Logf("deaf client (%s): connection ended after %v with %v; client: %s; peak %d goroutines (baseline %d), %d fds (baseline %d), heap %+d KiB",
				tt.name, ended.Round(time.Millisecond), err, result, maxGors, baseGors, maxFDs, baseFDs, (int64(maxHeap)-int64(baseHeap))>>10)
			matched := false
			for _, w := range tt.wants {
				matched = matched || strings.Contains(err.Error(), w)
			}
			var le *LimitError
			switch {
			case !matched:
				t.Errorf("the deaf connection ended with %v; want one of %q", err, tt.wants)
			case strings.Contains(err.Error(), "WriteTimeout") && (!errors.As(err, &le) || le.Limit != "WriteTimeout"):
				t.Errorf("the deaf connection ended with %v; want a *LimitError for WriteTimeout", err)
			case strings.Contains(err.Error(), "MaxPendingCalls") && !errors.Is(err, ErrProtocol):
				t.Errorf("the deaf connection ended with %v; want a protocol error for the window", err)
			}
			if ended > writeTimeout+5*time.Second {
				t.Errorf("the deaf connection ended after %v; WriteTimeout is %v", ended, writeTimeout)
			}
			// Held: at most `handlers` answers waiting for the socket (each
			// a goroutine, its request and its answer) and `window` queued
			// requests.
			if limit := baseGors + handlers + 16; maxGors > limit {
				t.Errorf("goroutines peaked at %d; bound %d (baseline %d + MaxConcurrentHandlers)", maxGors, limit, baseGors)
			}
			if limit := int64(baseHeap) + int64(handlers+window)*int64(2*tt.size+4096) + 8<<20; int64(maxHeap) > limit {
				t.Errorf("heap peaked at %d bytes; bound %d (baseline %d)", maxHeap, limit, baseHeap)
			}
			if maxFDs > baseFDs+8 {
				t.Errorf("descriptors peaked at %d (baseline %d)", maxFDs, baseFDs)
			}
			if out, err := good.Call(t.Context(), []byte("echo:after")); err != nil || string(out) != "after" {
				t.Errorf("good connection after the attack: %q, %v", out, err)
			}
		})
	}
}
