//go:build linux && !kalpc_stub

package alpc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// handlerPair returns two connected Conns in this process whose handlers are
// ha and hb.
func handlerPair(t *testing.T, ha, hb Handler) (*Conn, *Conn) {
	t.Helper()
	fa, fb, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	defer fb.Close()
	type result struct {
		c   *Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := FileConn(t.Context(), fb, &Config{Handler: hb})
		ch <- result{c, err}
	}()
	a, err := FileConn(t.Context(), fa, &Config{Handler: ha})
	r := <-ch
	if err != nil || r.err != nil {
		t.Fatalf("FileConn: %v, %v", err, r.err)
	}
	return a, r.c
}

// The primary reader runs a request's handler itself; while it does, the
// spare reader must keep the connection going: other calls, callbacks made
// by handlers, one-way messages in order, and Close, which must not wait
// for the handler.
func TestInlineHandlerDoesNotStopReading(t *testing.T) {
	checkLeaks(t)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	var order []string
	var orderMu sync.Mutex
	server := HandlerFunc(func(ctx context.Context, req *Request) ([]byte, error) {
		switch p := string(req.Payload()); {
		case p == "block":
			started <- struct{}{}
			<-release // ignores ctx on purpose
			return []byte("unblocked"), nil
		case p == "callback":
			// Served on the primary: its reply must be read by the spare.
			return req.Conn().Call(ctx, []byte("from-server"))
		case req.OneWay():
			orderMu.Lock()
			order = append(order, p)
			orderMu.Unlock()
			return nil, nil
		default:
			return req.Payload(), nil
		}
	})
	client := HandlerFunc(func(ctx context.Context, req *Request) ([]byte, error) {
		return append([]byte("client saw "), req.Payload()...), nil
	})
	c, s := handlerPair(t, client, server)
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	// A callback from a handler running on the primary.
	if out, err := c.Call(ctx, []byte("callback")); err != nil || string(out) != "client saw from-server" {
		t.Fatalf("callback = %q, %v", out, err)
	}

	blocked := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), []byte("block"))
		blocked <- err
	}()
	<-started
	for i := range 100 {
		want := fmt.Sprint("echo-", i)
		if out, err := c.Call(ctx, []byte(want)); err != nil || string(out) != want {
			t.Fatalf("call while a handler blocks = %q, %v", out, err)
		}
	}
	if out, err := c.Call(ctx, []byte("callback")); err != nil || string(out) != "client saw from-server" {
		t.Fatalf("callback while a handler blocks = %q, %v", out, err)
	}
	for i := range 50 {
		if err := c.Send(ctx, fmt.Append(nil, i)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		orderMu.Lock()
		n := len(order)
		orderMu.Unlock()
		if n == 50 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	orderMu.Lock()
	for i, got := range order {
		if got != fmt.Sprint(i) {
			t.Fatalf("one-way messages out of order: %q", order)
		}
	}
	if len(order) != 50 {
		t.Fatalf("%d of 50 one-way messages handled", len(order))
	}
	orderMu.Unlock()

	// Close does not wait for the blocked handler.
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a handler")
	}
	if err := <-blocked; !errors.Is(err, ErrPeerClosed) {
		t.Errorf("blocked call ended with %v; want ErrPeerClosed", err)
	}
	close(release)
}
