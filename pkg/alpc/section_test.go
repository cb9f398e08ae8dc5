//go:build linux && !kalpc_stub

package alpc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

func TestLargePayloads(t *testing.T) {
	checkLeaks(t)
	path, _ := startServer(t, "server")
	c, err := Dial(t.Context(), path, nil, &Config{Handler: testHandler(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sizes := []int{DefaultInlineLimit + 1, 1 << 20, 16 << 20, 256 << 20}
	if testing.Short() {
		sizes = sizes[:3]
	}
	for _, n := range sizes {
		t.Run(sizeName(n), func(t *testing.T) {
			data := pattern(n)
			want := sha256.Sum256(data)
			// Request through a section, hashed by the server in place.
			got, err := c.Call(t.Context(), append([]byte("sha:"), data...))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want[:]) {
				t.Fatalf("server hashed %x, want %x", got, want)
			}
			// Reply through a section, copied by default.
			reply, err := c.Call(t.Context(), fmt.Appendf(nil, "gen:%d", n))
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(reply) != want {
				t.Fatal("reply content differs")
			}
			// Reply read in place.
			v, err := c.CallView(t.Context(), fmt.Appendf(nil, "gen:%d", n))
			if err != nil {
				t.Fatal(err)
			}
			if !v.Shared() || sha256.Sum256(v.Bytes()) != want {
				t.Fatalf("view: shared=%v, content matches=%v", v.Shared(), sha256.Sum256(v.Bytes()) == want)
			}
			v.Release()
			// A callback carrying the large payload the other way.
			out, err := c.Call(t.Context(), fmt.Appendf(nil, "cb-sha:%d", n))
			if err != nil || string(out) != "ok" {
				t.Fatalf("callback with %d bytes: %q, %v", n, out, err)
			}
		})
	}
	t.Run("one-way", func(t *testing.T) {
		for range 20 {
			if err := c.Send(t.Context(), append([]byte("sha:"), pattern(4<<20)...)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Call(t.Context(), []byte("echo:sync")); err != nil {
			t.Fatal(err)
		}
	})
}

func TestLoans(t *testing.T) {
	checkLeaks(t)
	path, _ := startServer(t, "server")
	c, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	l, err := c.Loan(t.Context(), 4+16<<20)
	if err != nil {
		t.Fatal(err)
	}
	b := l.Bytes()
	copy(b, "sha:")
	copy(b[4:], pattern(16<<20))
	got, err := c.CallLoan(t.Context(), l)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(pattern(16 << 20)); !bytes.Equal(got, want[:]) {
		t.Fatal("loaned payload hashed differently by the server")
	}

	t.Run("spent loan fails loudly", func(t *testing.T) {
		if _, err := c.CallLoan(t.Context(), l); !errors.Is(err, ErrLoanSpent) {
			t.Errorf("second CallLoan = %v; want ErrLoanSpent", err)
		}
		if err := c.SendLoan(t.Context(), l); !errors.Is(err, ErrLoanSpent) {
			t.Errorf("SendLoan of a spent loan = %v; want ErrLoanSpent", err)
		}
		mustPanic(t, "Bytes of a sent loan", func() { _ = l.Bytes() })
		l.Release() // no-op
	})
	t.Run("released loan", func(t *testing.T) {
		l, err := c.Loan(t.Context(), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
		mustPanic(t, "Bytes of a released loan", func() { _ = l.Bytes() })
		if err := c.SendLoan(t.Context(), l); !errors.Is(err, ErrLoanSpent) {
			t.Errorf("SendLoan of a released loan = %v; want ErrLoanSpent", err)
		}
	})
	t.Run("released view", func(t *testing.T) {
		v, err := c.CallView(t.Context(), []byte("gen:1048576"))
		if err != nil {
			t.Fatal(err)
		}
		v.Release()
		mustPanic(t, "Bytes of a released view", func() { _ = v.Bytes() })
		v.Release() // no-op
	})
	t.Run("one-way loans", func(t *testing.T) {
		for range 10 {
			l, err := c.Loan(t.Context(), 8<<20)
			if err != nil {
				t.Fatal(err)
			}
			copy(l.Bytes(), "sha:")
			if err := c.SendLoan(t.Context(), l); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	f()
}

// sectionMaps counts this process's mappings of kalpc sections.
func sectionMaps(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "memfd:kalpc-section")
}

func TestSenderKilledMidTransfer(t *testing.T) {
	checkLeaks(t)
	baseMaps := sectionMaps(t)
	got := make(chan struct{}, 100)
	l, path := listenTest(t, &Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) ([]byte, error) {
		select {
		case got <- struct{}{}:
		default:
		}
		v := req.View()
		defer v.Release()
		sum := sha256.Sum256(v.Bytes())
		return sum[:], nil
	})})
	conns := make(chan *Conn, 1)
	go acceptInto(l, conns)
	h := startHelper(t, "blaster", path)
	server := <-conns
	defer server.Close()
	// Wait until transfers are flowing, then kill the sender mid-stream.
	for range 3 {
		select {
		case <-got:
		case <-time.After(20 * time.Second):
			t.Fatal("no transfer arrived")
		}
	}
	killed := time.Now()
	h.kill()
	select {
	case <-server.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("receiver did not notice the sender's death")
	}
	d := time.Since(killed)
	t.Logf("receiver saw the sender's death %v after kill -9", d)
	if d > 100*time.Millisecond {
		t.Errorf("receiver saw peer death after %v; want within 100ms", d)
	}
	if !errors.Is(server.Err(), ErrPeerClosed) {
		t.Errorf("Err() = %v; want ErrPeerClosed", server.Err())
	}
	server.Close()
	deadline := time.Now().Add(3 * time.Second)
	for sectionMaps(t) != baseMaps && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := sectionMaps(t); n != baseMaps {
		t.Errorf("%d section mappings remain after the peer died (baseline %d)", n, baseMaps)
	}
}

// goodSeals are the seals a well-formed section carries.
const goodSeals = requiredSeals | sys.SealFutureWrite

// sectionFD makes a memfd of size bytes, every page written, with the
// given seals.
func sectionFD(t *testing.T, size int64, seals int) int {
	t.Helper()
	fd, err := sys.MemfdCreate("hostile", size)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := sys.MmapPopulate(fd, int(size), sys.ProtRead|sys.ProtWrite)
	if err != nil {
		t.Fatal(err)
	}
	sys.Munmap(mem)
	if seals != 0 {
		if err := sys.AddSeals(fd, seals); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

func TestHostileSections(t *testing.T) {
	checkLeaks(t)
	baseMaps := sectionMaps(t)
	path, conns, good, goodServer := listenWithGood(t, &Config{MaxSectionBytes: 64 << 20, Handler: HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		return bytes.TrimPrefix(r.Payload(), []byte("echo:")), nil // the good traffic's echo calls
	})}, nil, 1)
	g := startGoodTraffic(t, good)

	section := func(id uint64, size uint64) []byte {
		h := wire.Header{Type: wire.TypeSection, ID: id, NFDs: 1, Aux64: size}
		b := make([]byte, wire.HeaderSize)
		h.Put(b)
		return b
	}
	ref := func(sec uint32, off, n uint64) []byte {
		r := wire.SectionRef{Section: sec, Offset: off, Length: n}
		b := make([]byte, wire.SectionRefSize)
		r.Put(b)
		return header(wire.TypeRequest, wire.FlagSection, 1, b)
	}
	regular, err := os.CreateTemp(t.TempDir(), "regular")
	if err != nil {
		t.Fatal(err)
	}
	regular.Truncate(1 << 20)
	defer regular.Close()

	sealed := func() int { return sectionFD(t, 1<<20, goodSeals) }
	tests := []struct {
		name  string
		steps []hostileStep
		wants string
	}{
		{"unsealed memfd", []hostileStep{{section(1, 1<<20), func() int { return sectionFD(t, 1<<20, 0) }}}, "not sealed"},
		{"shrinkable memfd", []hostileStep{{section(1, 1<<20), func() int { return sectionFD(t, 1<<20, sys.SealGrow|sys.SealSeal) }}}, "not sealed"},
		{"pipe", []hostileStep{{section(1, 1<<20), func() int { r, w := pipeFDs(t); sys.Close(w); return r }}}, "not a memfd"},
		{"regular file", []hostileStep{{section(1, 1<<20), func() int { fd, _ := sys.DupCloexec(int(regular.Fd())); return fd }}}, "not a memfd"},
		{"smaller than claimed", []hostileStep{{section(1, 2<<20), sealed}}, "is 1048576 bytes, announced 2097152"},
		{"over budget", []hostileStep{{section(1, 128<<20), func() int { return sectionFD(t, 128<<20, goodSeals) }}}, "exceeded MaxSectionBytes"},
		{"announced twice", []hostileStep{{section(1, 1<<20), sealed}, {section(1, 1<<20), sealed}}, "announced twice"},
		{"past the end", []hostileStep{{section(1, 1<<20), sealed}, {ref(1, 1<<20, 1), nil}}, "outside section 1"},
		{"overflowing", []hostileStep{{section(1, 1<<20), sealed}, {ref(1, 1<<64-16, 32), nil}}, "outside section 1"},
		{"unknown section", []hostileStep{{ref(9, 0, 10), nil}}, "unknown section 9"},
		{"section without fd", []hostileStep{{section(1, 1<<20), nil}}, "declares 1 fds but carries 0"},
		{"release of what was not lent", []hostileStep{{header(wire.TypeRelease, 0, 0, wire.AppendExtent(nil, wire.Extent{Section: 1, Offset: 0, Length: 10})), nil}}, "release of unknown section 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			attack(t, path, conns, tt.steps, tt.wants)
			if out, err := good.Call(t.Context(), []byte("still here")); err != nil || string(out) != "still here" {
				t.Fatalf("good connection after attack: %q, %v", out, err)
			}
		})
	}
	t.Run("truncating a sealed section", func(t *testing.T) {
		fd := rawDial(t, path)
		defer sys.Close(fd)
		server := <-conns
		defer server.Close()
		mfd := sectionFD(t, 1<<20, goodSeals)
		defer sys.Close(mfd)
		if err := sys.Sendmsg(fd, section(1, 1<<20), nil, []int{mfd}, sys.MsgNoSignal); err != nil {
			t.Fatal(err)
		}
		if err := sys.Ftruncate(mfd, 0); err == nil {
			t.Fatal("a sealed section could be truncated")
		}
		// The receiver reads the section normally.
		if err := sys.Sendmsg(fd, ref(1, 4096, 100), nil, nil, sys.MsgNoSignal); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256)
		for {
			n, _, _, err := sys.Recvmsg(fd, buf, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			h, payload, err := wire.Parse(buf[:n])
			if err != nil {
				t.Fatal(err)
			}
			if h.Type == wire.TypeRelease {
				continue // the server returns the buffer it copied
			}
			if h.Type != wire.TypeReply || len(payload) != 100 {
				t.Fatalf("reply: %+v %d bytes", h, len(payload))
			}
			break
		}
	})
	g.finish(t, 10, 50*time.Millisecond)
	good.Close()
	goodServer.Close()
	deadline := time.Now().Add(3 * time.Second)
	for sectionMaps(t) > baseMaps && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := sectionMaps(t); n > baseMaps {
		t.Errorf("%d section mappings left (baseline %d)", n, baseMaps)
	}
}

func TestSectionExhaustion(t *testing.T) {
	checkLeaks(t)
	// The receiver holds every payload's View until told to let go.
	var mu sync.Mutex
	var held []*View
	l, path := listenTest(t, &Config{Handler: HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		mu.Lock()
		held = append(held, r.View())
		mu.Unlock()
		return nil, nil
	})})
	go acceptAll(t, l)
	const budget = 8 << 20
	c, err := Dial(t.Context(), path, nil, &Config{MaxSectionBytes: budget})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 1<<20)
	sent := 0
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		_, err := c.Call(ctx, payload)
		cancel()
		if err != nil {
			var le *LimitError
			if !errors.As(err, &le) || le.Limit != "MaxSectionBytes" {
				t.Fatalf("Call error = %v; want a MaxSectionBytes LimitError", err)
			}
			break
		}
		sent++
		if sent > budget/len(payload)+1 {
			t.Fatalf("sent %d MiB through an %d MiB budget without waiting", sent, budget>>20)
		}
	}
	if sent < budget/len(payload)-1 {
		t.Errorf("only %d calls fit in the %d-byte budget", sent, budget)
	}
	// A blocked sender completes once the receiver releases.
	done := make(chan error, 1)
	go func() {
		_, err := c.Call(t.Context(), payload)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	for _, v := range held {
		v.Release()
	}
	held = nil
	mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("sender still blocked after the receiver released its buffers")
	}
	mu.Lock()
	for _, v := range held {
		v.Release()
	}
	mu.Unlock()
}

// Requests queued behind a busy handler when the connection ends never
// run; the shared memory they reference must still be released.
func TestQueuedSectionRequestsReleasedOnClose(t *testing.T) {
	checkLeaks(t)
	baseMaps := sectionMaps(t)
	entered := make(chan struct{}, 10)
	l, path := listenTest(t, &Config{MaxConcurrentHandlers: 1, Handler: HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		entered <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})})
	conns := make(chan *Conn, 1)
	go acceptInto(l, conns)
	c, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	server := <-conns
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { _, _ = c.Call(context.Background(), make([]byte, 1<<20)) })
	}
	<-entered // one runs, two wait in the queue
	time.Sleep(100 * time.Millisecond)
	c.Close()
	wg.Wait()
	<-server.Done()
	server.Close()
	deadline := time.Now().Add(3 * time.Second)
	for sectionMaps(t) > baseMaps && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := sectionMaps(t); n > baseMaps {
		t.Fatalf("%d section mappings left after the connection ended (baseline %d)", n, baseMaps)
	}
}

// TestReplyLoan covers zero-copy in both directions: a handler replying
// with Request.ReplyLoan, CallLoanView reading that reply in place, and the
// loan going back to the handler's side whatever the handler does.
func TestReplyLoan(t *testing.T) {
	checkLeaks(t)
	path, _ := startServer(t, "server")
	c, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	for _, n := range []int{0, 100, 1 << 20, 16 << 20} {
		got, err := c.Call(t.Context(), fmt.Appendf(nil, "loan-gen:%d", n))
		if err != nil {
			t.Fatalf("loan-gen:%d: %v", n, err)
		}
		if !bytes.Equal(got, pattern(n)) {
			t.Fatalf("loan-gen:%d: reply differs from pattern(%d) (len %d)", n, n, len(got))
		}
	}

	t.Run("CallLoanView", func(t *testing.T) {
		req := fmt.Appendf(nil, "loan-gen:%d", 8<<20)
		l, err := c.Loan(t.Context(), len(req))
		if err != nil {
			t.Fatal(err)
		}
		copy(l.Bytes(), req)
		v, err := c.CallLoanView(t.Context(), l)
		if err != nil {
			t.Fatal(err)
		}
		if !v.Shared() {
			t.Error("an 8 MiB reply was not read in place")
		}
		if !bytes.Equal(v.Bytes(), pattern(8<<20)) {
			t.Error("reply differs from pattern")
		}
		v.Release()
		if _, err := c.CallLoanView(t.Context(), l); !errors.Is(err, ErrLoanSpent) {
			t.Errorf("CallLoanView of a spent loan = %v; want ErrLoanSpent", err)
		}
	})

	t.Run("handler error releases the loan", func(t *testing.T) {
		// 40 failed 64 MiB reply loans are 2.5 GiB: more than the server's
		// 1 GiB section budget, so a leak would block the final call.
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		for i := range 40 {
			_, err := c.Call(ctx, fmt.Appendf(nil, "loan-fail:%d", 64<<20))
			var re *RemoteError
			if !errors.As(err, &re) || re.Code != CodeUnavailable {
				t.Fatalf("loan-fail #%d = %v; want the handler's Unavailable error (leaked loans?)", i, err)
			}
		}
		got, err := c.Call(ctx, fmt.Appendf(nil, "loan-gen:%d", 64<<20))
		if err != nil {
			t.Fatalf("a reply loan after 40 failed ones: %v (leaked loans?)", err)
		}
		if len(got) != 64<<20 {
			t.Fatalf("reply of %d bytes; want 64 MiB", len(got))
		}
	})

	t.Run("reply bytes and a reply loan", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		_, err := c.Call(ctx, []byte("loan-both:4096"))
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != CodeInternal {
			t.Fatalf("loan-both = %v; want an Internal error", err)
		}
	})
}

// TestReplyLoanMisuse checks ReplyLoan's own errors in-process.
func TestReplyLoanMisuse(t *testing.T) {
	a, b := pipePair(t)
	other, _ := pipePair(t)
	l, err := other.Loan(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	req := &Request{conn: a}
	if err := req.ReplyLoan(l); err == nil {
		t.Error("ReplyLoan accepted a loan of another connection")
	}
	own, err := a.Loan(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Request{conn: a, oneWay: true}).ReplyLoan(own); err == nil {
		t.Error("ReplyLoan accepted a one-way request")
	}
	if err := req.ReplyLoan(own); err != nil {
		t.Fatal(err)
	}
	if err := req.ReplyLoan(own); err == nil {
		t.Error("ReplyLoan accepted a second loan")
	}
	own.Release()
	if err := (&Request{conn: a}).ReplyLoan(own); !errors.Is(err, ErrLoanSpent) {
		t.Errorf("ReplyLoan of a released loan = %v; want ErrLoanSpent", err)
	}
	_ = b
}

// pipePair returns two connected Conns in this process (FileConn on both
// ends of a SocketPair), closed when the test ends.
func pipePair(t *testing.T) (*Conn, *Conn) {
	t.Helper()
	fa, fb, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		c   *Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := FileConn(t.Context(), fb, nil)
		ch <- result{c, err}
	}()
	a, err := FileConn(t.Context(), fa, nil)
	r := <-ch
	fa.Close()
	fb.Close()
	if err != nil || r.err != nil {
		t.Fatalf("FileConn: %v, %v", err, r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}
