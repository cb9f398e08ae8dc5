package alpc

// This file is the write path every message takes: writePayload picks the
// technique (inline or a section), write waits for socket buffer space,
// and sendMessage makes the one sendmsg(2) (internal/sys).

import (
	"context"
	"errors"
	"fmt"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// writePayload sends a request or reply carrying payload: inline when it
// fits, otherwise copied into a shared-memory section.
func (c *Conn) writePayload(ctx context.Context, h *wire.Header, payload []byte) error {
	if len(payload) <= c.lim.sendInline {
		return c.write(ctx, h, payload, nil)
	}
	b, err := c.alloc(ctx, int64(len(payload)))
	if err != nil {
		return err
	}
	copy(b.bytes(), payload)
	err = c.writeRef(ctx, h, b)
	c.unrefOut(b.sec)
	return err
}

// writeRef sends a message whose payload is buffer b, lending it to the
// peer until it releases it. If the message cannot be sent, b is freed.
func (c *Conn) writeRef(ctx context.Context, h *wire.Header, b buffer) error {
	var rb [wire.SectionRefSize]byte
	ref := b.ref()
	ref.Put(rb[:])
	h.Flags |= wire.FlagSection
	c.lend(b)
	if err := c.write(ctx, h, rb[:], nil); err != nil {
		_ = c.freeBuffer(b.sec.id, b.off, b.n, false)
		return err
	}
	return nil
}

// tryWrite sends a payload-less message without waiting for buffer space.
func (c *Conn) tryWrite(h *wire.Header) error {
	var hb [wire.HeaderSize]byte
	h.Put(hb[:])
	fd, err := c.sock.Acquire()
	if err != nil {
		return c.endErr()
	}
	defer c.sock.Release()
	return sys.Sendmsg(fd, hb[:], nil, nil, sys.MsgDontWait|sys.MsgNoSignal)
}

// write sends one message, waiting for socket buffer space until ctx ends
// or the connection does.
func (c *Conn) write(ctx context.Context, h *wire.Header, payload []byte, fds []int) error {
	fd, err := c.sock.Acquire()
	if err != nil {
		return c.endErr()
	}
	defer c.sock.Release()
	err = sendMessage(fd, h, payload, fds, func() error { return c.waitWritable(ctx, fd) })
	if errors.Is(err, ErrPeerClosed) {
		c.fail(ErrPeerClosed)
		return c.endErr()
	}
	return err
}

// errWriteStalled is the cause of a write that waited WriteTimeout for room
// in the peer's socket buffer.
var errWriteStalled = errors.New("the peer read nothing from its socket")

// waitWritable waits for room in the socket buffer until ctx ends, the
// connection does, or WriteTimeout passes (which ends the connection).
func (c *Conn) waitWritable(ctx context.Context, fd int) error {
	select {
	case c.congested <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.endErr()
	}
	defer func() { <-c.congested }()
	wctx := ctx
	if c.cfg.WriteTimeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeoutCause(ctx, c.cfg.WriteTimeout, errWriteStalled)
		defer cancel()
	}
	if err := sys.WaitFD(wctx, fd, sys.PollOut); err != nil {
		if ctx.Err() == nil && errors.Is(context.Cause(wctx), errWriteStalled) {
			// The peer read nothing for WriteTimeout: it is not a peer we
			// can serve. Ending the connection frees everything waiting on
			// it (handlers' answers, callbacks, credits, releases).
			c.fail(&LimitError{Limit: "WriteTimeout", Value: int64(c.cfg.WriteTimeout), Err: errWriteStalled})
			return c.endErr()
		}
		return err
	}
	select {
	case <-c.done:
		return c.endErr()
	default:
		return nil
	}
}

// sendMessage sends one datagram (header h, then payload, with fds) without
// blocking in sendmsg: while the socket buffer is full it calls wait. It
// returns ErrPeerClosed if the peer is gone.
func sendMessage(fd int, h *wire.Header, payload []byte, fds []int, wait func() error) error {
	var hb [wire.HeaderSize]byte
	h.Length = uint32(len(payload))
	h.NFDs = uint8(len(fds))
	h.Put(hb[:])
	for {
		err := sys.Sendmsg(fd, hb[:], payload, fds, sys.MsgDontWait|sys.MsgNoSignal)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, sys.EAGAIN):
			if err := wait(); err != nil {
				return err
			}
		case errors.Is(err, sys.EINTR):
		case errors.Is(err, sys.EPIPE), errors.Is(err, sys.ECONNRESET):
			return ErrPeerClosed
		default:
			return fmt.Errorf("alpc: send: %w", err)
		}
	}
}
