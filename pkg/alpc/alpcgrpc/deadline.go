package alpcgrpc

import (
	"context"
	"os"
	"sync"
	"time"
)

// deadline is one of a connection's I/O deadlines. Its context is cancelled,
// with cause os.ErrDeadlineExceeded, when the deadline passes, and whenever
// the parent context (the connection's) ends. Setting a new deadline affects
// operations already waiting, as net.Conn requires.
type deadline struct {
	mu     sync.Mutex
	parent context.Context
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
}

func newDeadline(parent context.Context) *deadline {
	d := &deadline{parent: parent}
	d.ctx, d.cancel = context.WithCancelCause(parent)
	return d
}

// set moves the deadline to t; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fired := false
	if d.timer != nil {
		// A timer that already fired has cancelled (or is about to cancel)
		// the current context: start a fresh one.
		fired = !d.timer.Stop()
		d.timer = nil
	}
	if fired || d.ctx.Err() != nil {
		// The old context is left to its timer, which ends it with
		// os.ErrDeadlineExceeded: operations still holding it must see a
		// timeout, never a cancellation.
		d.ctx, d.cancel = context.WithCancelCause(d.parent)
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		d.cancel(os.ErrDeadlineExceeded)
		return
	}
	cancel := d.cancel
	d.timer = time.AfterFunc(dur, func() { cancel(os.ErrDeadlineExceeded) })
}

// context returns the context that ends with the current deadline.
func (d *deadline) context() context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ctx
}

// stop releases the deadline's timer.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.cancel(nil)
}
