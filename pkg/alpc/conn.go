package alpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// Credentials are a peer process's identity as reported by the kernel
// (SO_PEERCRED) when the socket was connected. For a channel handed over by
// a broker (see FileConn), they describe the process that created it.
type Credentials struct {
	PID int32
	UID uint32
	GID uint32
}

// Limits are a connection's negotiated limits: for each, the smaller of the
// two sides' Config values.
type Limits struct {
	// InlineLimit is the largest payload sent inline.
	InlineLimit int
	// MaxMessageSize is the largest payload either side may send.
	MaxMessageSize int64
	// MaxPendingCalls is the most requests in flight per direction.
	MaxPendingCalls int
	// MaxSectionBytes is the shared memory this side may lend its peer.
	MaxSectionBytes int64
	// DirectAccess reports whether both sides allow direct-access grants.
	DirectAccess bool
}

// Conn is one end of a private, bidirectional kalpc channel. Both ends are
// equal: either may Call or Send, and each serves the other's requests with
// its Config.Handler. A Conn is safe for concurrent use.
//
// The Conn owns its socket descriptor and closes it exactly once, when the
// connection ends (Close, peer hang-up or a protocol violation) and every
// system call using it has returned.
type Conn struct {
	sock    *sys.Socket
	cfg     Config
	lim     limits
	cred    Credentials
	handler Handler
	log     *slog.Logger
	// acceptMsg is the server's reply to the connection message (client side).
	acceptMsg []byte

	nextID    atomic.Uint64
	nextGrant atomic.Uint64
	// slots holds one token per request in flight to the peer.
	slots chan struct{}
	// congested serialises the slow (socket buffer full) write path so
	// that at most one thread per Conn blocks in poll.
	congested chan struct{}

	// out holds the sections we lend the peer; in those it lends us.
	out *outPool
	in  *inPool

	mu sync.Mutex
	// calls are our calls awaiting a reply, by id.
	calls map[uint64]*call
	// oneWayOut counts our one-way requests not yet credited back.
	oneWayOut int
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
	// regions the peer granted us, by grant id.
	regions map[uint64]*RemoteRegion
	err     error // why the Conn ended; set once

	// Graceful shutdown (shutdown.go). goingAway: no new calls or one-way
	// messages but callbacks (Shutdown here, or the peer's go-away).
	// writing counts requests registered before that and not yet written.
	goingAway     bool
	peerGoingAway bool
	shuttingDown  bool
	goAwayAcked   chan struct{} // closed by the peer's acknowledgement
	writing       atomic.Int32

	// rd is how the socket is read: the primary and spare readers (see
	// reader.go).
	rd reader

	done       chan struct{}
	readerDone chan struct{}
	closed     atomic.Bool
	baseCtx    context.Context
	baseCancel context.CancelFunc
}

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
	out := append([]byte(nil), r.sp.bytes()...)
	c.releasePayload(r.sp)
	return out
}

var callPool = sync.Pool{New: func() any { return &call{ch: make(chan callResult, 1)} }}

// newConn starts a Conn on a connected, blocking socket whose handshake is
// done. It takes ownership of fd.
func newConn(fd int, cfg *Config, peer wire.Params) *Conn {
	cred, _ := sys.PeerCred(fd)
	lim := negotiate(cfg, peer)
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{
		sock:       sys.NewSocket(fd),
		cfg:        *cfg,
		lim:        lim,
		cred:       Credentials(cred),
		handler:    cfg.Handler,
		log:        slog.Default().With("component", "alpc"),
		slots:      make(chan struct{}, lim.window),
		congested:  make(chan struct{}, 1),
		calls:      make(map[uint64]*call),
		serving:    make(map[uint64]*Request),
		regions:    make(map[uint64]*RemoteRegion),
		idle:       make(chan *Request),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		baseCtx:    ctx,
		baseCancel: cancel,
		out:        newOutPool(lim.sendSections),
		in:         newInPool(lim.recvSections),
	}
	// Handlers' contexts derive from baseCtx: the value lets a handler's
	// callbacks through a shutdown (see mayStart).
	c.baseCtx = context.WithValue(ctx, connKey{}, c)
	c.rd.init(lim.recvInline)
	rfd, _ := c.sock.Acquire() // a new socket: cannot fail
	go c.readLoop(rfd)
	return c
}

// PeerCredentials returns the peer's kernel-reported credentials.
func (c *Conn) PeerCredentials() Credentials { return c.cred }

// AcceptMessage returns, on a dialed Conn, the message the server passed to
// ConnRequest.Accept; nil elsewhere.
func (c *Conn) AcceptMessage() []byte { return c.acceptMsg }

// Limits returns the connection's negotiated limits.
func (c *Conn) Limits() Limits {
	return Limits{
		InlineLimit:     c.lim.sendInline,
		MaxMessageSize:  c.lim.maxMessage,
		MaxPendingCalls: c.lim.window,
		MaxSectionBytes: c.lim.sendSections,
		DirectAccess:    c.lim.directAccess,
	}
}

// Done is closed when the connection has ended; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is open, then why it ended:
// ErrClosed, ErrPeerClosed, a *ProtocolError, or a system error.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection: pending calls fail with ErrClosed, handlers'
// contexts are cancelled, and the socket is closed once no system call uses
// it. Close waits for that and returns nil; a second Close returns ErrClosed.
func (c *Conn) Close() error {
	first := c.closed.CompareAndSwap(false, true)
	c.fail(ErrClosed)
	<-c.readerDone
	<-c.sock.Done()
	if !first {
		return ErrClosed
	}
	return nil
}

// fail ends the connection with err (the first error wins).
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	calls := c.calls
	c.calls = nil
	// Requests still queued will never run: finish them below so that
	// their contexts and any shared memory they hold are released.
	var dropped []*Request
	for _, q := range []*fifo{&c.callQueue, &c.oneWayQueue} {
		for r := q.pop(); r != nil; r = q.pop() {
			dropped = append(dropped, r)
		}
	}
	c.mu.Unlock()

	_ = c.sock.Close()
	c.baseCancel()
	close(c.done)
	for _, cl := range calls {
		if !cl.abandoned {
			cl.ch <- callResult{err: err}
		}
	}
	for _, r := range dropped {
		r.finish()
	}
	// Unmapping large sections takes a while: after everyone waiting has
	// been told.
	c.closeOut()
	c.closeIn()
	c.closeRegions()
}

func (c *Conn) endErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return ErrClosed
}

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
		req := c.serving[h.ID]
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
	if c.inflight >= c.lim.window {
		c.mu.Unlock()
		req.finish()
		return protocolErrorf("peer exceeded MaxPendingCalls (%d requests in flight)", c.lim.window)
	}
	start := false
	if oneWay {
		c.oneWayActive++
		if !c.oneWayRunning {
			c.oneWayRunning, start = true, true
		} else {
			c.oneWayQueue.push(req)
		}
	} else {
		if _, dup := c.serving[h.ID]; dup {
			c.mu.Unlock()
			req.finish()
			return protocolErrorf("duplicate request id %d", h.ID)
		}
		c.serving[h.ID] = req
		if c.running < c.cfg.MaxConcurrentHandlers {
			c.running++
			start = true
		} else {
			c.callQueue.push(req)
		}
	}
	c.inflight++
	c.mu.Unlock()
	if start {
		if c.rd.mayInline {
			// The primary reader runs it itself (see serveInline).
			c.rd.inline = req
			return nil
		}
		if !oneWay {
			select {
			case c.idle <- req: // an idle worker takes it, with its grown stack
				return nil
			default:
			}
		}
		go c.serve(req, true)
	}
	return nil
}

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

// SocketPair returns a connected pair of kalpc-capable sockets, for a
// broker that creates a channel and hands each end to a different process
// (see FileConn). The caller owns both files.
func SocketPair() (*os.File, *os.File, error) {
	if err := checkPlatform("socket pair"); err != nil {
		return nil, nil, err
	}
	a, b, err := sys.SeqpacketPair()
	if err != nil {
		return nil, nil, fmt.Errorf("alpc: %w", err)
	}
	return os.NewFile(uintptr(a), "alpc-channel"), os.NewFile(uintptr(b), "alpc-channel"), nil
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
