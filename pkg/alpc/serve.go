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

		c.mu.Lock()
		// Finish the request's accounting before answering: the peer may
		// send its next request as soon as it reads the answer.
		credit, next := c.sched.finished(req, c.lim.window)
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
	if next := c.sched.nextQueued(); next != nil {
		c.mu.Unlock()
		return next
	}
	if !park || c.err != nil || !c.sched.park() {
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	var req *Request
	select {
	case req = <-c.sched.idle:
	case <-c.done:
	}
	c.mu.Lock()
	c.sched.idleWorkers--
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

// scheduler is where the peer's requests wait for a handler and how many
// run. Its fields are guarded by Conn.mu, but for idle, a channel.
type scheduler struct {
	// inflight counts the peer's requests not yet finished.
	inflight int
	// serving are the peer's calls being handled or queued, by id, so a
	// cancel can reach them.
	serving map[uint64]*Request
	// running counts call handlers running; callQueue holds calls waiting
	// for one of the MaxConcurrentHandlers.
	running   int
	callQueue fifo
	// idle hands calls to workers waiting in nextCall.
	idle        chan *Request
	idleWorkers int
	// One-way requests are handled one at a time, in order, by a single
	// worker (a message queue), apart from calls. oneWayActive counts those
	// queued or running; credits those finished but not yet credited.
	oneWayQueue   fifo
	oneWayRunning bool
	oneWayActive  int
	credits       uint32
}

func (s *scheduler) init() {
	s.serving = make(map[uint64]*Request)
	s.idle = make(chan *Request)
}

// admit takes a request from the peer, which may have at most window in
// flight, and reports whether a worker should start it now (otherwise it
// is queued). An error is the peer's protocol violation; req is then not
// recorded.
func (s *scheduler) admit(req *Request, window, maxHandlers int) (start bool, err error) {
	if s.inflight >= window {
		return false, protocolErrorf("peer exceeded MaxPendingCalls (%d requests in flight)", window)
	}
	if req.oneWay {
		s.oneWayActive++
		if !s.oneWayRunning {
			s.oneWayRunning, start = true, true
		} else {
			s.oneWayQueue.push(req)
		}
	} else {
		if _, dup := s.serving[req.id]; dup {
			return false, protocolErrorf("duplicate request id %d", req.id)
		}
		s.serving[req.id] = req
		if s.running < maxHandlers {
			s.running++
			start = true
		} else {
			s.callQueue.push(req)
		}
	}
	s.inflight++
	return start, nil
}

// finished records that req's handler returned. For a one-way request it
// returns the credits to send the peer now (batched by an eighth of the
// window, or all once no one-way request is left) and the next queued
// one-way request for the same worker, if any.
func (s *scheduler) finished(req *Request, window int) (credit uint32, next *Request) {
	s.inflight--
	if !req.oneWay {
		delete(s.serving, req.id)
		return 0, nil
	}
	s.oneWayActive--
	s.credits++
	if s.oneWayActive == 0 || s.credits >= uint32(max(1, window/8)) {
		credit, s.credits = s.credits, 0
	}
	if next = s.oneWayQueue.pop(); next == nil {
		s.oneWayRunning = false
	}
	return credit, next
}

// nextQueued returns the next queued call for a worker whose answer is
// written; if there is none, the worker gives up its handler slot.
func (s *scheduler) nextQueued() *Request {
	if next := s.callQueue.pop(); next != nil {
		return next
	}
	s.running--
	return nil
}

// park reports whether a worker with nothing to do may wait on idle for
// the next call; if so it counts as idle until it decrements idleWorkers.
func (s *scheduler) park() bool {
	if s.idleWorkers >= maxIdleWorkers {
		return false
	}
	s.idleWorkers++
	return true
}

// quiet reports whether no request of the peer is in flight or running.
func (s *scheduler) quiet() bool {
	return s.inflight == 0 && s.running == 0 && !s.oneWayRunning
}

// drain empties the queues and returns the requests that will now never
// run.
func (s *scheduler) drain() []*Request {
	var dropped []*Request
	for _, q := range []*fifo{&s.callQueue, &s.oneWayQueue} {
		for r := q.pop(); r != nil; r = q.pop() {
			dropped = append(dropped, r)
		}
	}
	return dropped
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
