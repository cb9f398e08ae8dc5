//go:build linux && !kalpc_stub

package alpc

import (
	"context"
	"errors"
	"testing"
	"time"
)

// lateTimerCtx reports a deadline that has passed while its Done channel
// is not closed yet, as a context whose timer has not fired (a loaded
// machine delays timers).
type lateTimerCtx struct {
	context.Context
	deadline time.Time
}

func (c lateTimerCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// A Call whose deadline has passed returns ctx's own error, after ctx
// reports it: callers that check ctx.Err() after a failed call (as TestSoak
// does) must not see a deadline error with ctx.Err() still nil. Found by
// TestSoak on a loaded machine.
func TestCallPastDeadlineMatchesCtxErr(t *testing.T) {
	checkLeaks(t)
	l, path := listenTest(t, &Config{Handler: testHandler(nil)})
	go acceptAll(t, l)
	c, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	inner, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	ctx := lateTimerCtx{Context: inner, deadline: time.Now().Add(-time.Second)}
	_, err = c.Call(ctx, []byte("echo:x"))
	if ctx.Err() == nil || !errors.Is(err, ctx.Err()) {
		t.Fatalf("Call with a passed deadline = %v while ctx.Err() = %v; want ctx's error, once ctx reports it", err, ctx.Err())
	}
}

// A Call or Send made with a context that has already ended is never sent:
// it used to reach the peer's handler anyway and then race the handler's
// reply against ctx (gRPC's cancel_after_begin interop case saw OK instead
// of Canceled on a loaded CI machine).
func TestEndedContextIsNotSent(t *testing.T) {
	checkLeaks(t)
	notes := make(chan string, 4)
	l, path := listenTest(t, &Config{Handler: testHandler(notes)})
	go acceptAll(t, l)
	c, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Call(ctx, []byte("note:call")); !errors.Is(err, context.Canceled) {
		t.Errorf("Call with a cancelled context = %v; want context.Canceled", err)
	}
	if err := c.Send(ctx, []byte("note:send")); !errors.Is(err, context.Canceled) {
		t.Errorf("Send with a cancelled context = %v; want context.Canceled", err)
	}
	// The connection still works, and the peer's handler saw neither.
	if err := c.Send(t.Context(), []byte("note:after")); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-notes:
		if n != "after" {
			t.Errorf("the peer handled %q, sent with a cancelled context", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the good one-way message did not arrive")
	}
}
