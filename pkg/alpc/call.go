package alpc

// This file holds the outgoing side of a Conn: Call and Send check the
// message, take a slot in the peer's request window, register the call and
// hand the message to the write path (write.go).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

type call struct {
	ch        chan callResult
	abandoned bool
}

type callResult struct {
	payload []byte          // inline reply
	sp      *sectionPayload // or a reply in a peer's section
	err     error
}

// take returns the reply's bytes, copying (and releasing) a section reply.
func (r callResult) take(c *Conn) []byte {
	if r.sp == nil {
		return r.payload
	}
	out := privateCopy(r.sp.bytes())
	c.releasePayload(r.sp)
	return out
}

var callPool = sync.Pool{New: func() any { return &call{ch: make(chan callResult, 1)} }}

// Call sends payload to the peer's handler and waits for its reply. Many
// calls may be in flight at once. While waiting, this side keeps serving
// the peer's requests (callbacks). If ctx ends first, Call returns
// ctx.Err() and tells the peer, whose handler's context is cancelled; a
// deadline on ctx is also passed to the peer's handler.
func (c *Conn) Call(ctx context.Context, payload []byte) ([]byte, error) {
	r, err := c.roundTrip(ctx, len(payload), func(h *wire.Header) error {
		return c.writePayload(ctx, h, payload)
	})
	if err != nil {
		return nil, err
	}
	return r.take(c), nil
}

// CallView is Call, but a reply that arrived in shared memory is not copied:
// the View reads it in place until released. Release it promptly: until
// then the peer cannot reuse that memory.
func (c *Conn) CallView(ctx context.Context, payload []byte) (*View, error) {
	r, err := c.roundTrip(ctx, len(payload), func(h *wire.Header) error {
		return c.writePayload(ctx, h, payload)
	})
	if err != nil {
		return nil, err
	}
	return newView(c, r.payload, r.sp), nil
}

// roundTrip sends one request with send and waits for its answer.
func (c *Conn) roundTrip(ctx context.Context, size int, send func(*wire.Header) error) (callResult, error) {
	if err := c.checkSize(size); err != nil {
		return callResult{}, err
	}
	if err := ctx.Err(); err != nil {
		// Never sent: a call made with an ended context must not reach the
		// peer's handler (and then race its own reply against ctx).
		return callResult{}, err
	}
	if err := c.acquireSlot(ctx); err != nil {
		return callResult{}, err
	}
	// The remaining time is measured after waiting for a slot, so the
	// peer's deadline trails ours only by the message's transit time.
	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		if timeout = time.Until(dl); timeout <= 0 {
			c.releaseSlots(1)
			// The deadline has passed but ctx's timer may not have fired
			// yet: wait for it, so that the caller never sees a deadline
			// error while ctx.Err() is still nil.
			<-ctx.Done()
			return callResult{}, ctx.Err()
		}
	}
	id := c.nextID.Add(1)
	cl := callPool.Get().(*call)
	c.mu.Lock()
	counted, err := c.mayStart(ctx)
	if err != nil {
		c.mu.Unlock()
		c.releaseSlots(1)
		callPool.Put(cl)
		return callResult{}, err
	}
	c.calls[id] = cl
	c.mu.Unlock()

	h := wire.Header{Type: wire.TypeRequest, ID: id, Aux64: uint64(timeout)}
	err = send(&h)
	if counted {
		c.writing.Add(-1)
	}
	if err != nil {
		c.mu.Lock()
		_, mine := c.calls[id]
		delete(c.calls, id)
		c.mu.Unlock()
		if mine {
			c.releaseSlots(1)
			callPool.Put(cl)
			return callResult{}, err
		}
		// The connection failed and fail() owns the call now: it delivers
		// (or has delivered) the connection's error.
		r := <-cl.ch
		callPool.Put(cl)
		return callResult{}, r.err
	}

	select {
	case r := <-cl.ch:
		callPool.Put(cl)
		return r, r.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if _, ok := c.calls[id]; ok {
		// The reply will still come (the peer always answers, if only with
		// "canceled"); it frees the slot then.
		cl.abandoned = true
		c.mu.Unlock()
		// A passed deadline needs no cancel: the peer's handler got the
		// same deadline (trailing ours by the request's transit time) and
		// sees DeadlineExceeded itself.
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) || timeout == 0 {
			c.sendCancel(id)
		}
		return callResult{}, ctx.Err()
	}
	c.mu.Unlock()
	r := <-cl.ch // delivered concurrently with the cancellation
	callPool.Put(cl)
	return r, r.err
}

// Send delivers payload to the peer's handler without waiting for it to be
// handled (a one-way message). It returns once the message is queued in the
// socket. The peer handles one-way messages one at a time, in the order they
// were sent (a message queue, apart from calls, which run concurrently). It
// returns each message's slot when its handler is done, so a fast sender is
// paced by a slow receiver.
func (c *Conn) Send(ctx context.Context, payload []byte) error {
	return c.oneWay(ctx, len(payload), func(h *wire.Header) error {
		return c.writePayload(ctx, h, payload)
	})
}

func (c *Conn) oneWay(ctx context.Context, size int, send func(*wire.Header) error) error {
	if err := c.checkSize(size); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err // never sent
	}
	if err := c.acquireSlot(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	counted, err := c.mayStart(ctx)
	if err != nil {
		c.mu.Unlock()
		c.releaseSlots(1)
		return err
	}
	c.oneWayOut++
	c.mu.Unlock()
	h := wire.Header{Type: wire.TypeRequest, Flags: wire.FlagOneWay, ID: c.nextID.Add(1)}
	err = send(&h)
	if counted {
		c.writing.Add(-1)
	}
	if err != nil {
		c.mu.Lock()
		c.oneWayOut--
		c.mu.Unlock()
		c.releaseSlots(1)
		return err
	}
	return nil
}

func (c *Conn) checkSize(n int) error {
	if int64(n) > c.lim.maxMessage {
		return c.tooLarge(fmt.Sprintf("%d bytes", n))
	}
	if n > c.lim.sendInline && !c.lim.sections {
		return c.sectionsDisabled(int64(n))
	}
	return nil
}

// sectionsDisabled is the error for an n-byte message that needs a
// section on a connection without them.
func (c *Conn) sectionsDisabled(n int64) error {
	if c.cfg.DisableSections {
		return fmt.Errorf("%w: %d bytes exceeds the inline limit of %d bytes and shared-memory sections are disabled on this side (Config.DisableSections, set by a port whose policy has maxSectionBytesPerConnection: 0)", ErrTooLarge, n, c.lim.sendInline)
	}
	return fmt.Errorf("%w: %d bytes exceeds the inline limit of %d bytes and the peer does not take shared-memory sections", ErrTooLarge, n, c.lim.sendInline)
}

// acquireSlot waits for room in the peer's request window.
func (c *Conn) acquireSlot(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-c.done:
		return c.endErr()
	case <-ctx.Done():
		return &LimitError{Limit: "MaxPendingCalls", Value: int64(c.lim.window), Policy: c.policyField("MaxPendingCalls", int64(c.lim.window)), Err: ctx.Err()}
	}
}

func (c *Conn) releaseSlots(n int) {
	for range n {
		<-c.slots
	}
}

// sendCancel tells the peer we gave up on call id. It never blocks the
// caller: under back-pressure the cancel is sent from its own goroutine.
func (c *Conn) sendCancel(id uint64) {
	h := wire.Header{Type: wire.TypeCancel, ID: id}
	err := c.tryWrite(&h)
	if errors.Is(err, sys.EAGAIN) {
		go func() { _ = c.write(c.baseCtx, &h, nil, nil) }()
	}
}
