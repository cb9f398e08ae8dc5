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
