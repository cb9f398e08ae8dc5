package alpc

import (
	"context"
	"errors"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// ErrGoingAway means a call or one-way message was not sent because the
// connection is shutting down, or was shut down by the peer, gracefully
// (Shutdown on either side). The peer never saw it, so it is safe to retry
// on another connection.
var ErrGoingAway = errors.New("alpc: connection is shutting down; not sent")

// connKey marks the contexts of a Conn's handlers (see mayStart).
type connKey struct{}

// mayStart reports whether a new call or one-way message may start on
// the open connection, and whether it is counted as being written (then
// the caller decrements writing once it is). c.mu is held. Once the
// connection is going away only callbacks start: calls made with the
// context of a request this Conn is serving, which the peer waits for.
func (c *Conn) mayStart(ctx context.Context) (counted bool, err error) {
	switch {
	case c.err != nil && c.peerGoingAway && errors.Is(c.err, ErrPeerClosed):
		// The peer shut down gracefully: tell it apart from a crash,
		// nothing of this call was sent.
		return false, ErrGoingAway
	case c.err != nil:
		return false, c.err
	case !c.goingAway:
		c.writing.Add(1)
		return true, nil
	case ctx.Value(connKey{}) == c:
		return false, nil
	}
	return false, ErrGoingAway
}

// Shutdown ends the connection gracefully, the way a server replaced in a
// rolling update should. It stops this side from starting calls and
// one-way messages (they fail with ErrGoingAway; callbacks made with a
// handler's context still go), and tells the peer, whose library does the
// same and acknowledges once every request it had started is written.
// Shutdown then waits until every request of the peer has been handled and
// answered and every call of this side has its reply, and closes the
// connection. Calls therefore either complete or fail with ErrGoingAway
// without being sent: none is lost in flight.
//
// One-way messages are refused like calls once the shutdown begins, so a
// protocol built on them (a stream) should finish its exchanges first.
//
// If ctx ends first, or the peer does not acknowledge (an older or
// misbehaving peer), Shutdown closes the connection as Close does and
// returns ctx.Err(). It returns ErrClosed if the connection was closed
// already, and the connection's error if it ended otherwise meanwhile.
func (c *Conn) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if c.err != nil || c.shuttingDown {
		c.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			_ = c.Close()
			return ctx.Err()
		}
		return c.endErr()
	}
	c.shuttingDown = true
	c.goingAway = true
	acked := make(chan struct{})
	c.goAwayAcked = acked
	c.mu.Unlock()

	// Our requests are all written before the announcement, so the peer
	// has them before it learns that no more will come.
	if !c.waitFor(ctx, c.written) {
		return c.abortShutdown(ctx)
	}
	h := wire.Header{Type: wire.TypeGoAway, Aux32: wire.GoAwayAnnounce}
	if err := c.write(ctx, &h, nil, nil); err != nil {
		return c.abortShutdown(ctx)
	}
	select {
	case <-acked:
	case <-c.done:
		_ = c.Close()
		return c.endErr()
	case <-ctx.Done():
		return c.abortShutdown(ctx)
	}
	// Every request the peer started arrived before its acknowledgement:
	// wait for them to be answered and for our calls' replies.
	if !c.waitFor(ctx, c.quiet) {
		return c.abortShutdown(ctx)
	}
	_ = c.Close()
	return nil
}

// written reports whether every request counted by mayStart is written.
func (c *Conn) written() bool { return c.writing.Load() == 0 }

// quiet reports whether no call is in progress in either direction and
// every one-way message has been handled.
func (c *Conn) quiet() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls) == 0 && c.sched.quiet() && c.oneWayOut == 0
}

// waitFor polls cond until it holds (true), or ctx or the connection ends
// (false; cond is checked once more when the connection ended). The poll
// interval grows from 100 µs to 10 ms: drains are usually short, but a
// handler may run long.
func (c *Conn) waitFor(ctx context.Context, cond func() bool) bool {
	d := 100 * time.Microsecond
	t := time.NewTimer(d)
	defer t.Stop()
	for !cond() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		case <-c.done:
			return cond()
		}
		d = min(2*d, 10*time.Millisecond)
		t.Reset(d)
	}
	return true
}

func (c *Conn) abortShutdown(ctx context.Context) error {
	_ = c.Close()
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.endErr()
}

// receiveGoAway handles the peer's announcement or acknowledgement.
func (c *Conn) receiveGoAway(what uint32) error {
	switch what {
	case wire.GoAwayAnnounce:
		c.mu.Lock()
		first := !c.peerGoingAway
		c.peerGoingAway, c.goingAway = true, true
		c.mu.Unlock()
		if first {
			go c.ackGoAway()
		}
		return nil
	case wire.GoAwayAck:
		c.mu.Lock()
		acked := c.goAwayAcked
		c.goAwayAcked = nil
		c.mu.Unlock()
		if acked == nil {
			return protocolErrorf("go-away acknowledged but none was announced")
		}
		close(acked)
		return nil
	}
	return protocolErrorf("go-away message with unknown kind %d", what)
}

// ackGoAway answers the peer's announcement once every request this side
// started before it is written.
func (c *Conn) ackGoAway() {
	if !c.waitFor(c.baseCtx, c.written) {
		return
	}
	h := wire.Header{Type: wire.TypeGoAway, Aux32: wire.GoAwayAck}
	_ = c.write(c.baseCtx, &h, nil, nil)
}
