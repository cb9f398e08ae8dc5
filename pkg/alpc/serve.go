package alpc

// This file schedules the peer's requests onto handlers: calls run
// concurrently up to MaxConcurrentHandlers, one-way messages one at a time
// in order, and each call's answer is written before its slot is freed.

import (
	"errors"

	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// serve runs req's handler, answers it, then keeps serving queued requests
// of the same kind (calls or one-way messages). A call worker with nothing
// left to do waits for the next call if park is set (see nextCall).
func (c *Conn) serve(req *Request, park bool) {
	for req != nil {
		resp, herr := c.invoke(req)
		req.finish()

		var credit uint32
		c.mu.Lock()
		// Finish the request's accounting before answering: the peer may
		// send its next request as soon as it reads the answer.
		c.inflight--
		var next *Request
		if req.oneWay {
			c.oneWayActive--
			c.credits++
			if c.oneWayActive == 0 || c.credits >= uint32(max(1, c.lim.window/8)) {
				credit, c.credits = c.credits, 0
			}
			if next = c.oneWayQueue.pop(); next == nil {
				c.oneWayRunning = false
			}
		} else {
			delete(c.serving, req.id)
		}
		c.mu.Unlock()

		if req.oneWay {
			if credit > 0 {
				h := wire.Header{Type: wire.TypeCredit, Aux32: credit}
				_ = c.write(c.baseCtx, &h, nil, nil)
			}
			req = next
			continue
		}
		c.answer(req, resp, herr)
		// The handler's slot is held until its answer is written: a peer
		// that does not read its answers cannot make us start more
		// handlers (and hold more answers) than MaxConcurrentHandlers;
		// what it sends meanwhile queues within its request window.
		req = c.nextCall(park)
	}
}

// nextCall returns the next queued call for a worker whose answer is
// written; if there is none, the worker gives up its handler slot and, if
// park is set, waits as an idle worker (or returns nil).
func (c *Conn) nextCall(park bool) *Request {
	c.mu.Lock()
	if next := c.callQueue.pop(); next != nil {
		c.mu.Unlock()
		return next
	}
	c.running--
	if !park || c.idleWorkers >= maxIdleWorkers || c.err != nil {
		c.mu.Unlock()
		return nil
	}
	c.idleWorkers++
	c.mu.Unlock()
	var req *Request
	select {
	case req = <-c.idle:
	case <-c.done:
	}
	c.mu.Lock()
	c.idleWorkers--
	c.mu.Unlock()
	return req
}

// maxIdleWorkers is how many call workers per Conn wait for the next call
// instead of exiting, so that a steady stream of calls reuses goroutines
// (and their grown stacks) instead of starting one per call.
const maxIdleWorkers = 2

func (c *Conn) invoke(req *Request) (resp []byte, err error) {
	if c.handler == nil {
		return nil, Errorf(CodeUnimplemented, "no handler on this side of the connection")
	}
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("handler panicked", "panic", p)
			resp, err = nil, Errorf(CodeInternal, "handler panicked: %v", p)
		}
	}()
	return c.handler.ServeALPC(req.ctx, req)
}

func (c *Conn) answer(req *Request, resp []byte, herr error) {
	if l := req.replyLoan; l != nil {
		req.replyLoan = nil
		if herr == nil && resp != nil {
			herr = Errorf(CodeInternal, "handler returned a reply and set a reply loan")
		}
		if herr != nil {
			l.Release()
		} else {
			h := wire.Header{Type: wire.TypeReply, ID: req.id}
			err := c.sendLoan(c.baseCtx, &h, l)
			if err == nil || !errors.Is(err, ErrLimit) {
				return
			}
			herr = Errorf(CodeResourceExhausted, "reply not sent: %v", err)
		}
	}
	if herr == nil {
		if err := c.checkSize(len(resp)); err != nil {
			herr = Errorf(CodeResourceExhausted, "reply not sent: %v", err)
		}
	}
	if herr == nil {
		h := wire.Header{Type: wire.TypeReply, ID: req.id}
		err := c.writePayload(c.baseCtx, &h, resp)
		if err == nil || !errors.Is(err, ErrLimit) {
			return
		}
		herr = Errorf(CodeResourceExhausted, "reply not sent: %v", err)
	}
	if herr != nil {
		code, msg := errorToWire(herr)
		if len(msg) > c.lim.sendInline {
			msg = msg[:c.lim.sendInline]
		}
		h := wire.Header{Type: wire.TypeError, ID: req.id, Aux32: uint32(code)}
		_ = c.write(c.baseCtx, &h, []byte(msg), nil)
	}
}

// fifo is a queue of requests.
type fifo struct {
	items []*Request
	head  int
}

func (q *fifo) push(r *Request) { q.items = append(q.items, r) }

func (q *fifo) pop() *Request {
	if q.head == len(q.items) {
		return nil
	}
	r := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	return r
}
