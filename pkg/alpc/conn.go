package alpc

// This file holds a Conn's lifecycle: its state, how it starts on a
// handshaken socket, and how it ends (Close, fail).

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

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
	lim     negotiated
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
	// sched is where the peer's requests wait for and run on handlers
	// (serve.go).
	sched scheduler
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
		regions:    make(map[uint64]*RemoteRegion),
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
	c.sched.init()
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
	dropped := c.sched.drain()
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
