package alpc

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// Reading the socket
//
// The primary reader (readLoop) receives the connection's datagrams in a
// blocking recvmsg and dispatches them. Handing a request from it to a
// worker goroutine readies a goroutine, and the Go runtime then wakes an
// idle thread to look for work (wakep → futexwakeup), which on a small
// machine spins on the core the peer process needs: that hand-off was the
// largest cost of a small round trip after the socket itself. So the
// primary runs a request that may start now on its own goroutine
// (serveInline) and only then reads again.
//
// A slow handler must not stop the reading (the peer's other requests,
// cancellations, the replies to the handler's own callbacks...): while the
// primary runs one, the spare reader (spareLoop) reads. It waits in
// epoll_wait on a private epoll instance watching the socket with
// EPOLLONESHOT, armed only while the primary is busy, so a datagram arriving
// while the primary is in recvmsg does not also wake it. The spare hands
// requests to workers, as the reader did before.
//
// Reader-ship (readMu) serialises recvmsg and dispatch between the two, so
// messages are handled in the order the peer sent them. The primary holds it
// while blocked in recvmsg; the spare only ever tries to take it, for one
// non-blocking receive.
//
// When the connection ends, the socket stays readable (hung up): a reader
// that sees the end arms the spare's instance so that the spare wakes and
// sees it too; the last one to exit closes the instance and readerDone. A
// primary still running a handler then exits when it returns (Close does not
// wait for handlers).
type reader struct {
	// readMu is reader-ship: its holder owns buf, oob, mayInline and inline.
	readMu sync.Mutex
	buf    []byte
	oob    []byte
	// mayInline is set by the primary: receiveRequest then leaves a request
	// that may start in inline instead of handing it to a worker.
	mayInline bool
	inline    *Request

	mu sync.Mutex
	// spare is the spare reader's epoll instance, nil until the first
	// request served inline and again once the last reader has exited.
	spare *sys.Readiness
	// busy: the primary runs a handler and the spare's instance is armed.
	busy bool
	// readers counts readers in their loop (the primary not while busy).
	readers int
	// ended: the last reader has exited; nobody reads again.
	ended bool
}

func (r *reader) init(recvInline int) {
	r.buf = make([]byte, wire.HeaderSize+recvInline)
	r.oob = make([]byte, sys.OOBSpace(wire.MaxFDs))
	r.readers = 1
}

// readOne receives and dispatches one datagram, waiting for one unless flags
// has sys.MsgDontWait. It reports ended once the connection has failed
// (readOne failed it if needed). The caller holds reader-ship.
func (c *Conn) readOne(fd int, flags int) (ended bool) {
	select {
	case <-c.done:
		// A shut-down socket still returns what was queued: nothing more
		// is dispatched once the connection has ended.
		return true
	default:
	}
	n, oobn, rflags, err := sys.Recvmsg(fd, c.rd.buf, c.rd.oob, sys.MsgCmsgCloexec|flags)
	if err != nil {
		switch {
		case errors.Is(err, sys.EINTR):
			return false
		case errors.Is(err, sys.EAGAIN):
			if flags&sys.MsgDontWait != 0 {
				return false
			}
			// A socket handed over in non-blocking mode.
			if werr := sys.WaitFD(context.Background(), fd, sys.PollIn); werr != nil {
				c.fail(fmt.Errorf("alpc: receive: %w", werr))
				return true
			}
			return false
		case errors.Is(err, sys.ECONNRESET):
			c.fail(ErrPeerClosed)
		default:
			c.fail(fmt.Errorf("alpc: receive: %w", err))
		}
		return true
	}
	fds, ferr := sys.ParseRights(c.rd.oob[:oobn])
	if n == 0 && len(fds) == 0 && ferr == nil {
		c.fail(ErrPeerClosed)
		return true
	}
	if err := c.receive(c.rd.buf[:n], fds, ferr, rflags); err != nil {
		c.fail(err)
		return true
	}
	return false
}

// readLoop is the primary reader. It never blocks on anything but recvmsg,
// except to run a handler inline while the spare reads. It holds a
// reference to the socket (fd) while in the loop.
func (c *Conn) readLoop(fd int) {
	for {
		c.rd.readMu.Lock()
		c.rd.mayInline = true
		ended := c.readOne(fd, 0)
		req := c.rd.inline
		c.rd.mayInline, c.rd.inline = false, nil
		c.rd.readMu.Unlock()
		if ended {
			c.exitReader()
			return
		}
		if req == nil {
			// Let the goroutine we may just have made runnable (a caller
			// or a worker) run on this P before we block in recvmsg again:
			// a blocked system call keeps its P, and the woken goroutine
			// would otherwise wait for another thread to steal it.
			runtime.Gosched()
			continue
		}
		var ok bool
		if fd, ok = c.serveInline(fd, req); !ok {
			return
		}
	}
}

// serveInline runs req (and what queues behind it, see serve) on the
// primary's goroutine instead of handing it to a worker, with the spare
// armed meanwhile. It returns the socket reference to read with next, or
// false if the connection ended meanwhile and the primary exited.
func (c *Conn) serveInline(fd int, req *Request) (int, bool) {
	if !c.startSpare() {
		go c.serve(req, true)
		return fd, true
	}
	c.rd.mu.Lock()
	c.rd.busy = true
	c.rd.readers--
	// EPOLL_CTL_MOD re-checks readiness: a datagram that arrived since our
	// recvmsg wakes the spare at once.
	err := c.rd.spare.Arm()
	c.rd.mu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("alpc: receive: %w", err))
	}
	// No socket reference while the handler runs: Close does not wait for
	// handlers.
	c.sock.Release()
	c.serve(req, false)

	fd, err = c.sock.Acquire()
	if err != nil {
		c.exitBusy()
		return -1, false
	}
	c.rd.mu.Lock()
	if c.rd.ended {
		c.rd.mu.Unlock()
		c.sock.Release()
		return -1, false
	}
	c.rd.busy = false
	c.rd.readers++
	// Failing only costs the spare wasted wake-ups.
	_ = c.rd.spare.Disarm()
	c.rd.mu.Unlock()
	return fd, true
}

// startSpare starts the spare reader, if there is none yet. It reports
// whether there is one.
func (c *Conn) startSpare() bool {
	c.rd.mu.Lock()
	exists := c.rd.spare != nil
	c.rd.mu.Unlock()
	if exists {
		return true
	}
	fd, err := c.sock.Acquire()
	if err != nil {
		return false
	}
	spare, err := sys.NewReadiness(fd, false)
	if err != nil {
		c.sock.Release()
		c.log.Warn("no spare reader: handlers run on workers", "err", err)
		return false
	}
	c.rd.mu.Lock()
	c.rd.spare = spare
	c.rd.readers++
	c.rd.mu.Unlock()
	go c.spareLoop(fd, spare)
	return true
}

// spareLoop is the spare reader: it reads while the primary runs a handler.
// It holds a reference to the socket (fd), which also keeps the descriptor
// number valid for its epoll instance.
func (c *Conn) spareLoop(fd int, ready *sys.Readiness) {
	for {
		if err := ready.Wait(); err != nil {
			c.fail(fmt.Errorf("alpc: receive: %w", err))
		}
		if !c.rd.readMu.TryLock() {
			// The primary is back in recvmsg: this wake-up came too late.
			continue
		}
		ended := c.readOne(fd, sys.MsgDontWait)
		c.rd.readMu.Unlock()
		if ended {
			c.exitReader()
			return
		}
		c.rd.mu.Lock()
		var err error
		if c.rd.busy {
			err = ready.Arm()
		}
		c.rd.mu.Unlock()
		if err != nil {
			c.fail(fmt.Errorf("alpc: receive: %w", err))
		}
		runtime.Gosched()
	}
}

// exitBusy ends the primary when the connection ended while it ran a
// handler (it is not counted in readers then). Normally the spare saw the
// end and exited last. But the spare may have seen it just before the
// primary went busy, and exited while the primary still counted: then
// nobody is left, and the primary is the last reader.
func (c *Conn) exitBusy() {
	c.rd.mu.Lock()
	last := c.rd.readers == 0 && !c.rd.ended
	if last {
		c.rd.ended = true
		if s := c.rd.spare; s != nil {
			_ = s.Close()
			c.rd.spare = nil
		}
	}
	c.rd.mu.Unlock()
	if last {
		close(c.readerDone)
	}
}

// exitReader ends a reader that saw the connection end: it wakes the spare,
// or, if it was the last reader, closes the spare's instance and readerDone.
func (c *Conn) exitReader() {
	c.rd.mu.Lock()
	c.rd.readers--
	last := c.rd.readers == 0
	if last {
		c.rd.ended = true
	}
	if s := c.rd.spare; s != nil {
		if last {
			_ = s.Close()
			c.rd.spare = nil
		} else if err := s.Arm(); err != nil {
			c.log.Error("waking the spare reader of an ended connection", "err", err)
		}
	}
	c.rd.mu.Unlock()
	c.sock.Release()
	if last {
		close(c.readerDone)
	}
}
