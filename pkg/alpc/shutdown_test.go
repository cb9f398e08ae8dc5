//go:build linux && !kalpc_stub

package alpc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// TestShutdownDrains: a server shuts a connection down while the client
// has calls in its handlers and one-way messages queued. Every call made
// before either side learned of the shutdown completes with its own reply;
// calls after that fail with ErrGoingAway at once, unsent; a handler's
// callback still goes through; then the connection closes.
func TestShutdownDrains(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	var handled sync.Map
	server, client := handlerPair(t, HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		if r.OneWay() {
			handled.Store(string(r.Payload()), true)
			return nil, nil
		}
		<-release
		// A callback with the handler's context, while shutting down.
		out, err := r.Conn().Call(ctx, []byte("callback"))
		if err != nil {
			return nil, fmt.Errorf("callback: %w", err)
		}
		return append(append([]byte(nil), r.Payload()...), out...), nil
	}), HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		return []byte("+cb"), nil
	}))
	defer client.Close()
	defer server.Close()

	const calls = 8
	results := make(chan error, calls)
	for i := range calls {
		go func() {
			want := fmt.Sprintf("call-%d", i)
			out, err := client.Call(t.Context(), []byte(want))
			if err == nil && string(out) != want+"+cb" {
				err = fmt.Errorf("reply %q, want %q", out, want+"+cb")
			}
			results <- err
		}()
	}
	for i := range 3 {
		if err := client.Send(t.Context(), fmt.Appendf(nil, "note-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until every call is in a handler.
	waitUntil(t, func() bool {
		server.mu.Lock()
		defer server.mu.Unlock()
		return len(server.sched.serving) == calls
	})

	done := make(chan error, 1)
	go func() { done <- server.Shutdown(t.Context()) }()
	// The client learns: new calls fail without being sent.
	waitUntil(t, func() bool {
		client.mu.Lock()
		defer client.mu.Unlock()
		return client.goingAway
	})
	if _, err := client.Call(t.Context(), []byte("late")); !errors.Is(err, ErrGoingAway) {
		t.Errorf("Call after the go-away = %v, want ErrGoingAway", err)
	}
	if err := client.Send(t.Context(), []byte("late")); !errors.Is(err, ErrGoingAway) {
		t.Errorf("Send after the go-away = %v, want ErrGoingAway", err)
	}
	// So does the server's own side (outside a handler).
	if _, err := server.Call(t.Context(), []byte("x")); !errors.Is(err, ErrGoingAway) {
		t.Errorf("server Call while shutting down = %v, want ErrGoingAway", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with calls in progress", err)
	case <-time.After(50 * time.Millisecond):
	}

	close(release)
	for range calls {
		if err := <-results; err != nil {
			t.Errorf("call in progress at the shutdown: %v", err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	for i := range 3 {
		if _, ok := handled.Load(fmt.Sprintf("note-%d", i)); !ok {
			t.Errorf("one-way note-%d sent before the shutdown was not handled", i)
		}
	}
	if _, ok := handled.Load("late"); ok {
		t.Error("a one-way message refused with ErrGoingAway was delivered")
	}
	select {
	case <-client.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client connection still open after the server's Shutdown")
	}
	if err := client.Err(); !errors.Is(err, ErrPeerClosed) {
		t.Errorf("client connection ended with %v, want ErrPeerClosed", err)
	}
	// Calls after a graceful end are still told apart from a crash.
	if _, err := client.Call(t.Context(), []byte("after")); !errors.Is(err, ErrGoingAway) {
		t.Errorf("Call after the server's Shutdown = %v, want ErrGoingAway", err)
	}
	if err := server.Shutdown(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("second Shutdown = %v, want ErrClosed", err)
	}
}

// TestShutdownBothSides: both sides shut down at once, with calls in
// progress both ways; every call completes and both Shutdowns return.
func TestShutdownBothSides(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	echo := HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		<-release
		return r.Payload(), nil
	})
	a, b := handlerPair(t, echo, echo)
	defer a.Close()
	defer b.Close()
	var wg sync.WaitGroup
	for _, c := range []*Conn{a, b} {
		for i := range 4 {
			wg.Go(func() {
				want := fmt.Sprint(i)
				if out, err := c.Call(t.Context(), []byte(want)); err != nil || string(out) != want {
					t.Errorf("call during shutdown: %q, %v", out, err)
				}
			})
		}
	}
	for _, c := range []*Conn{a, b} {
		waitUntil(t, func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return len(c.sched.serving) == 4
		})
	}
	errs := make(chan error, 2)
	for _, c := range []*Conn{a, b} {
		go func() { errs <- c.Shutdown(t.Context()) }()
	}
	time.Sleep(10 * time.Millisecond)
	close(release)
	wg.Wait()
	for range 2 {
		select {
		case err := <-errs:
			// The one that finishes second may find the connection ended
			// by the first.
			if err != nil && !errors.Is(err, ErrPeerClosed) {
				t.Errorf("Shutdown = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Shutdown on both sides hung")
		}
	}
}

// TestShutdownPeerSilent: a peer that never acknowledges (an older
// library, or a hostile one) cannot hold Shutdown past its context; the
// connection is closed.
func TestShutdownPeerSilent(t *testing.T) {
	checkLeaks(t)
	l, path := listenTest(t, nil)
	conns := make(chan *Conn, 1)
	go acceptInto(l, conns)
	fd := rawDial(t, path)
	defer sys.Close(fd)
	server := <-conns
	defer server.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := server.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a silent peer = %v, want DeadlineExceeded", err)
	}
	if err := server.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("connection after the failed Shutdown: %v, want ErrClosed", err)
	}
	// The raw peer got the announcement.
	buf := make([]byte, 64)
	n, _, _, err := sys.Recvmsg(fd, buf, nil, 0)
	if err != nil || n < wire.HeaderSize {
		t.Fatalf("raw peer read %d bytes, %v", n, err)
	}
	h, _, err := wire.Parse(buf[:n])
	if err != nil || h.Type != wire.TypeGoAway || h.Aux32 != wire.GoAwayAnnounce {
		t.Errorf("raw peer received %+v (%v), want a go-away announcement", h, err)
	}
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
