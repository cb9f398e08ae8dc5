package alpc

// This file is the incoming side of a Conn: the reader (reader.go) hands
// each datagram to receive, which validates it and dispatches it to a
// waiting call (a reply) or to the handler scheduler (a request, serve.go).

import (
	"context"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// receive validates and dispatches one datagram. It owns fds: each is
// closed unless handed on.
func (c *Conn) receive(b []byte, fds []int, ferr error, rflags int) error {
	owned := fds
	defer func() { sys.CloseAll(owned) }()
	switch {
	case ferr != nil:
		return protocolErrorf("bad control message: %v", ferr)
	case rflags&sys.MsgCtrunc != 0:
		return protocolErrorf("too many file descriptors attached (at most %d)", wire.MaxFDs)
	case rflags&sys.MsgTrunc != 0:
		return protocolErrorf("datagram larger than the inline limit of %d bytes", c.lim.recvInline)
	}
	h, payload, err := wire.Parse(b)
	if err != nil {
		return asProtocolError(err)
	}
	if int(h.NFDs) != len(fds) {
		return protocolErrorf("%v message declares %d fds but carries %d", h.Type, h.NFDs, len(fds))
	}
	switch h.Type {
	case wire.TypeReply, wire.TypeError:
		return c.receiveReply(&h, payload)
	case wire.TypeRequest:
		return c.receiveRequest(&h, payload)
	case wire.TypeCancel:
		c.mu.Lock()
		req := c.sched.serving[h.ID]
		c.mu.Unlock()
		if req != nil {
			req.cancel()
		}
		return nil
	case wire.TypeSection:
		return c.addSection(&h, fds[0])
	case wire.TypeRelease:
		return c.receiveRelease(payload)
	case wire.TypeDrop:
		return c.receiveDrop(h.ID)
	case wire.TypeGrant:
		return c.receiveGrant(&h, fds[0])
	case wire.TypeRevoke:
		c.receiveRevoke(h.ID)
		return nil
	case wire.TypeGoAway:
		return c.receiveGoAway(h.Aux32)
	case wire.TypeCredit:
		c.mu.Lock()
		if int(h.Aux32) > c.oneWayOut {
			c.mu.Unlock()
			return protocolErrorf("credit of %d exceeds the %d one-way messages outstanding", h.Aux32, c.oneWayOut)
		}
		c.oneWayOut -= int(h.Aux32)
		c.mu.Unlock()
		c.releaseSlots(int(h.Aux32))
		return nil
	}
	return protocolErrorf("unexpected %v message on an established connection", h.Type)
}

func (c *Conn) receiveReply(h *wire.Header, payload []byte) error {
	var sp *sectionPayload
	if h.Flags&wire.FlagSection != 0 {
		if h.Type == wire.TypeError {
			return protocolErrorf("error message in a section")
		}
		var err error
		if sp, err = c.resolve(payload); err != nil {
			return err
		}
	}
	c.mu.Lock()
	cl, ok := c.calls[h.ID]
	if !ok {
		c.mu.Unlock()
		if sp != nil {
			go c.releasePayload(sp)
		}
		return protocolErrorf("%v for unknown call %d", h.Type, h.ID)
	}
	delete(c.calls, h.ID)
	c.mu.Unlock()
	c.releaseSlots(1)
	if cl.abandoned {
		cl.abandoned = false
		callPool.Put(cl)
		if sp != nil {
			// Releasing writes to the socket: not from the reader.
			go c.releasePayload(sp)
		}
		return nil
	}
	var r callResult
	switch {
	case h.Type == wire.TypeError:
		r.err = &RemoteError{Code: Code(h.Aux32), Message: string(payload)}
	case sp != nil:
		r.sp = sp
	default:
		r.payload = append([]byte(nil), payload...)
	}
	cl.ch <- r
	return nil
}

func (c *Conn) receiveRequest(h *wire.Header, payload []byte) error {
	oneWay := h.Flags&wire.FlagOneWay != 0
	req := &Request{conn: c, id: h.ID, oneWay: oneWay, timeout: time.Duration(min(h.Aux64, 1<<62))}
	if h.Flags&wire.FlagSection != 0 {
		sp, err := c.resolve(payload)
		if err != nil {
			return err
		}
		req.sp = sp
	} else {
		req.payload = append([]byte(nil), payload...)
	}
	if h.Aux64 != 0 {
		req.ctx, req.cancel = context.WithTimeout(c.baseCtx, req.timeout)
	} else {
		req.ctx, req.cancel = context.WithCancel(c.baseCtx)
	}

	c.mu.Lock()
	start, err := c.sched.admit(req, c.lim.window, c.cfg.MaxConcurrentHandlers)
	c.mu.Unlock()
	if err != nil {
		req.finish()
		return err
	}
	if start {
		if c.rd.mayInline {
			// The primary reader runs it itself (see serveInline).
			c.rd.inline = req
			return nil
		}
		if !oneWay {
			select {
			case c.sched.idle <- req: // an idle worker takes it, with its grown stack
				return nil
			default:
			}
		}
		go c.serve(req, true)
	}
	return nil
}
