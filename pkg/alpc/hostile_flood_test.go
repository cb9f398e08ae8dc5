//go:build linux && !kalpc_stub

package alpc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// scmMaxFD is the kernel's SCM_MAX_FD: the most descriptors one sendmsg
// may attach.
const scmMaxFD = 253

func init() {
	hostileHelpers["fd-flooder"] = helperFDFlooder
	hostileHelpers["conn-flooder"] = helperConnFlooder
}

// helperFDFlooder ("path|messages|statsfile|phase") sends messages
// datagrams to the port, each carrying scmMaxFD descriptors. In phase
// "established" it completes a valid handshake first and sends requests;
// in phase "handshake" the connection message itself carries them. When
// the port hangs up (it must, at the first such message), it reconnects and
// goes on until all messages are sent.
func helperFDFlooder(arg string) error {
	f, err := splitArg(arg, 4)
	if err != nil {
		return err
	}
	path, total, stats, phase := f[0], atoi(f[1]), f[2], f[3]
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	defer w.Close()
	fds := make([]int, scmMaxFD)
	for i := range fds {
		fds[i] = int(r.Fd()) // the same pipe, attached 253 times
	}
	fmt.Println("READY")
	ctx := context.Background()
	params := make([]byte, wire.ParamsSize)
	p := hostileParams
	p.Put(params)
	connectMsg := header(wire.TypeConnect, 0, 0, params)
	sent, conns, refused := 0, 0, 0
	fd := -1
	for id := uint64(1); sent < total; id++ {
		if fd < 0 {
			if phase == "handshake" {
				fd, err = connect(ctx, path)
				if err == nil {
					err = sys.SetNonblock(fd, false)
				}
			} else {
				fd, err = rawConnect(ctx, path, nil)
			}
			if err != nil {
				return fmt.Errorf("connection %d: %w", conns, err)
			}
			conns++
		}
		msg := header(wire.TypeRequest, 0, id, []byte("echo:x"))
		if phase == "handshake" {
			msg = connectMsg
		}
		err := sys.Sendmsg(fd, msg, nil, fds, sys.MsgNoSignal)
		switch {
		case err == nil:
			sent++
		case errors.Is(err, unix.ETOOMANYREFS):
			// The kernel's cap on descriptors in flight: wait for the
			// port to drop what it has not read.
			refused++
			time.Sleep(time.Millisecond)
		case errors.Is(err, sys.EPIPE), errors.Is(err, sys.ECONNRESET):
			sys.Close(fd)
			fd = -1
		default:
			return fmt.Errorf("sendmsg: %w", err)
		}
	}
	if fd >= 0 {
		sys.Close(fd)
	}
	return writeStats(stats, "sent=%d fds=%d conns=%d toomanyrefs=%d", sent, sent*scmMaxFD, conns, refused)
}

func TestHostileFDFlood(t *testing.T) {
	for _, tt := range []struct {
		phase    string
		messages int
		wants    string
	}{
		{"established", 10000, "too many file descriptors attached"},
		{"handshake", 10000, "file descriptors attached to a handshake message"},
	} {
		t.Run(tt.phase, func(t *testing.T) {
			checkLeaks(t)
			var logs logCapture
			restore := logs.install()
			defer restore()
			path, conns, good, _ := listenWithGood(t, &Config{Handler: testHandler(nil)}, nil, 16)
			baseFDs := countFDs(t)

			g := startGoodTraffic(t, good)
			res := sampleResources()
			stats := filepath.Join(t.TempDir(), "stats")
			start := time.Now()
			startHelper(t, "fd-flooder", fmt.Sprintf("%s|%d|%s|%s", path, tt.messages, stats, tt.phase))
			// Every hostile connection must end with a protocol error.
			ended, bad := 0, 0
			var firstBad error
			flooded := make(chan string, 1)
			go func() { flooded <- waitForFile(t, stats, 60*time.Second) }()
			var result string
		loop:
			for {
				select {
				case c := <-conns:
					select {
					case <-c.Done():
					case <-time.After(5 * time.Second):
						t.Fatal("the port kept a descriptor-flooding connection open")
					}
					if err := c.Err(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tt.wants) {
						bad++
						if firstBad == nil {
							firstBad = err
						}
					}
					c.Close()
					ended++
				case result = <-flooded:
					break loop
				}
			}
			elapsed := time.Since(start)
			maxFDs, maxGors, _ := res.finish()
			g.finish(t, 10, 50*time.Millisecond)
			t.Logf("flood (%s): %s in %v; %d connections ended by the port; peak %d fds (baseline %d), %d goroutines",
				tt.phase, result, elapsed.Round(time.Millisecond), ended, maxFDs, baseFDs, maxGors)
			if bad > 0 {
				t.Errorf("%d flooding connections ended without the expected protocol error; first: %v", bad, firstBad)
			}
			if tt.phase == "handshake" && !logs.contains(tt.wants) {
				t.Errorf("the port did not log %q for a flooded handshake", tt.wants)
			}
			// Each message attached 253 descriptors; at most one per
			// connection is ever installed (and closed at once).
			if maxFDs > baseFDs+16 {
				t.Errorf("descriptors peaked at %d during the flood (baseline %d)", maxFDs, baseFDs)
			}
			if !strings.Contains(result, fmt.Sprintf("sent=%d ", tt.messages)) {
				t.Errorf("flooder result %q", result)
			}
		})
	}
}

// helperConnFlooder ("path|connections|statsfile") opens connections to
// the port and keeps every one open until all are made: one in four stays
// silent (the port must time it out), the others send a connection message
// ("flood") and never read the answer. A full backlog (EAGAIN) is waited
// out.
func helperConnFlooder(arg string) error {
	f, err := splitArg(arg, 3)
	if err != nil {
		return err
	}
	path, total, stats := f[0], atoi(f[1]), f[2]
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur < uint64(total)+64 {
		lim.Cur = min(lim.Max, uint64(total)+64)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return err
		}
	}
	params := make([]byte, wire.ParamsSize)
	p := hostileParams
	p.Put(params)
	msg := header(wire.TypeConnect, 0, 0, append(params, "flood"...))
	fmt.Println("READY")
	fds := make([]int, 0, total)
	defer func() { sys.CloseAll(fds) }()
	start := time.Now()
	waits := 0
	for len(fds) < total {
		fd, err := sys.SeqpacketSocket(true)
		if err != nil {
			return fmt.Errorf("socket %d: %w", len(fds), err)
		}
		for {
			err = sys.Connect(fd, path)
			if !errors.Is(err, sys.EAGAIN) {
				break
			}
			waits++ // the backlog is full
			time.Sleep(200 * time.Microsecond)
		}
		if err != nil {
			sys.Close(fd)
			return fmt.Errorf("connect %d: %w", len(fds), err)
		}
		if len(fds)%4 != 0 {
			_ = sys.Sendmsg(fd, msg, nil, nil, sys.MsgNoSignal|sys.MsgDontWait)
		}
		fds = append(fds, fd)
	}
	return writeStats(stats, "connections=%d in %v, backlog-full waits=%d", len(fds), time.Since(start).Round(time.Millisecond), waits)
}

func TestHostileConnectionFlood(t *testing.T) {
	checkLeaks(t)
	const (
		flood      = 10000
		maxPending = 64
		timeout    = 100 * time.Millisecond
	)
	l, path := listenTest(t, &Config{Handler: testHandler(nil), MaxPendingConnections: maxPending, HandshakeTimeout: timeout})
	conns := make(chan *Conn, 4)
	rejected := make(chan int, 1)
	go func() {
		n := 0
		defer func() { rejected <- n }()
		for {
			r, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			if string(r.Message) == "flood" {
				_ = r.Reject("go away")
				n++
				continue
			}
			if c, err := r.Accept(nil); err == nil {
				conns <- c
			}
		}
	}()
	good, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	goodServer := <-conns
	defer goodServer.Close()
	// The first call a connection serves starts its spare reader (one
	// goroutine, one epoll descriptor): part of the baseline.
	if _, err := good.Call(t.Context(), []byte("echo:warm-up")); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	baseFDs, baseGors := countFDs(t), runtime.NumGoroutine()

	g := startGoodTraffic(t, good)
	res := sampleResources()
	stats := filepath.Join(t.TempDir(), "stats")
	start := time.Now()
	startHelper(t, "conn-flooder", fmt.Sprintf("%s|%d|%s", path, flood, stats))
	// A new client dialing in the middle of the flood waits its turn in the
	// kernel's backlog, but gets through.
	time.Sleep(500 * time.Millisecond)
	dialStart := time.Now()
	dctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	late, err := Dial(dctx, path, nil, nil)
	cancel()
	dialTime := time.Since(dialStart)
	if err != nil {
		t.Errorf("a good client could not connect during the flood: %v (after %v)", err, dialTime)
	} else {
		lateServer := <-conns
		if out, err := late.Call(t.Context(), []byte("echo:late")); err != nil || string(out) != "late" {
			t.Errorf("late client's call: %q, %v", out, err)
		}
		late.Close()
		lateServer.Close()
	}
	result := waitForFile(t, stats, 60*time.Second)
	elapsed := time.Since(start)
	maxFDs, maxGors, _ := res.finish()
	g.finish(t, 10, 50*time.Millisecond)
	t.Logf("flood: %s (%v); a new client connected in %v; peak %d fds (baseline %d), %d goroutines (baseline %d)",
		result, elapsed.Round(time.Millisecond), dialTime.Round(time.Millisecond), maxFDs, baseFDs, maxGors, baseGors)
	// A connection in its handshake holds its socket, and one eventfd while
	// it waits; goroutines: one per handshake, and for a moment a second
	// one when its timeout fires (the context's AfterFunc that wakes it: on
	// a loaded machine many fire together). Everything else waits in the
	// kernel's backlog, in the flooder's account. The bounds do not grow
	// with the flood's 10,000 connections.
	if limit := baseFDs + 2*maxPending + 32; maxFDs > limit {
		t.Errorf("descriptors peaked at %d during the flood; bound %d (baseline %d + 2 x MaxPendingConnections)", maxFDs, limit, baseFDs)
	}
	if limit := baseGors + 2*maxPending + 32; maxGors > limit {
		t.Errorf("goroutines peaked at %d during the flood; bound %d (baseline %d + 2 x MaxPendingConnections)", maxGors, limit, baseGors)
	}
	// The flooder exits once it has written its result; its connections
	// close and the port returns to its baseline (checked for descriptors
	// and goroutines by checkLeaks once the good connection is closed too).
	deadline := time.Now().Add(5 * time.Second)
	for countFDs(t) > baseFDs && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := countFDs(t); n > baseFDs {
		t.Errorf("%d descriptors after the flood, baseline %d", n, baseFDs)
	}
	if out, err := good.Call(t.Context(), []byte("echo:after")); err != nil || string(out) != "after" {
		t.Errorf("good connection after the flood: %q, %v", out, err)
	}
	l.Close()
	t.Logf("the port rejected %d connection messages", <-rejected)
}
