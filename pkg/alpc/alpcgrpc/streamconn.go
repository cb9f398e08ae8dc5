package alpcgrpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// The compatibility mode's use of a kalpc connection (see docs/grpc.md):
//
//   - Every one-way message carries the next bytes of the sender's byte
//     stream. kalpc hands one-way messages to the handler one at a time, in
//     the order sent, and paces the sender by the receiver, so the messages
//     form a reliable, ordered, flow-controlled stream.
//   - Close first makes a "fin" call carrying the number of bytes the
//     sender wrote; the peer answers it once it has taken all of them, so no
//     data written before Close is lost when the channel is torn down.
const (
	finCall byte = 1
	finSize int  = 9

	// maxReadBuffer bounds the bytes a connection holds that Read has not
	// yet taken. Beyond it, the peer's writes wait.
	maxReadBuffer = 1 << 20

	// closeLinger bounds how long Close waits for the peer to take the
	// bytes written before it.
	closeLinger = 2 * time.Second

	// compatMaxPendingCalls is the default kalpc window of a compatibility
	// connection: with 63 KiB messages it bounds what is queued at the
	// receiver to about 4 MiB.
	compatMaxPendingCalls = 64
)

// streamConn is a net.Conn over a kalpc connection: a full-duplex, ordered,
// reliable byte stream, as TCP or a SOCK_STREAM Unix socket is.
type streamConn struct {
	conn          *alpc.Conn
	local, remote Addr

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	rdl    *deadline
	wdl    *deadline

	// wmu serialises writers, so concurrent Writes never interleave.
	wmu  sync.Mutex
	sent uint64 // bytes written, under wmu

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change below
	chunks   [][]byte      // bytes received and not yet read
	buffered int
	received uint64 // bytes taken from the peer, read or discarded
	eof      bool   // the peer closed its side after sending `received` bytes
	closed   bool

	closeOnce sync.Once
}

var _ net.Conn = (*streamConn)(nil)

func newStreamConn(local, remote Addr) *streamConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &streamConn{
		local:   local,
		remote:  remote,
		ctx:     ctx,
		cancel:  cancel,
		rdl:     newDeadline(ctx),
		wdl:     newDeadline(ctx),
		changed: make(chan struct{}),
	}
}

// broadcastLocked wakes everyone waiting for a change. c.mu must be held.
func (c *streamConn) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// serveALPC handles the peer's messages on the connection.
func (c *streamConn) serveALPC(ctx context.Context, req *alpc.Request) ([]byte, error) {
	p := req.Payload()
	if req.OneWay() {
		c.take(ctx, p)
		return nil, nil
	}
	if len(p) != finSize || p[0] != finCall {
		return nil, alpc.Errorf(alpc.CodeInvalidArgument, "alpcgrpc: unexpected call on a byte-stream connection")
	}
	return nil, c.fin(ctx, binary.LittleEndian.Uint64(p[1:]))
}

// take queues bytes the peer wrote, waiting while the read buffer is full.
// Once the connection is closed locally, bytes are counted and dropped.
func (c *streamConn) take(ctx context.Context, p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closed && c.buffered >= maxReadBuffer {
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			c.mu.Lock()
			return
		}
		c.mu.Lock()
	}
	if !c.closed && len(p) > 0 {
		c.chunks = append(c.chunks, p)
		c.buffered += len(p)
	}
	c.received += uint64(len(p))
	c.broadcastLocked()
}

// fin waits until the peer's n bytes have all been taken, then marks the
// end of the stream.
func (c *streamConn) fin(ctx context.Context, n uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.received < n {
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			c.mu.Lock()
			return ctx.Err()
		}
		c.mu.Lock()
	}
	c.eof = true
	c.broadcastLocked()
	return nil
}

// Read reads bytes the peer wrote. It returns io.EOF once the peer closed
// the connection and every byte it wrote has been read.
func (c *streamConn) Read(b []byte) (int, error) {
	ctx := c.rdl.context()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.closed:
			return 0, c.opError("read", net.ErrClosed)
		case len(b) == 0:
			return 0, nil
		case c.buffered > 0:
			n := 0
			for n < len(b) && len(c.chunks) > 0 {
				m := copy(b[n:], c.chunks[0])
				n += m
				if m == len(c.chunks[0]) {
					c.chunks[0] = nil
					c.chunks = c.chunks[1:]
				} else {
					c.chunks[0] = c.chunks[0][m:]
				}
			}
			wasFull := c.buffered >= maxReadBuffer
			c.buffered -= n
			if wasFull && c.buffered < maxReadBuffer {
				c.broadcastLocked()
			}
			return n, nil
		case c.eof:
			return 0, io.EOF
		}
		select {
		case <-c.conn.Done():
			// Everything the peer sent before the channel closed has been
			// handled by now except, after a crash, what was in flight.
			return 0, c.endError("read")
		default:
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		case <-c.conn.Done():
		}
		c.mu.Lock()
		if ctx.Err() != nil && !c.closed {
			return 0, c.opError("read", context.Cause(ctx))
		}
	}
}

// endError is the error for an operation on a connection whose channel has
// ended: io.EOF for reads after the peer went away.
func (c *streamConn) endError(op string) error {
	err := c.conn.Err()
	if op == "read" && errors.Is(err, alpc.ErrPeerClosed) {
		return io.EOF
	}
	return c.opError(op, err)
}

// Write writes b to the peer in messages of at most the connection's inline
// limit. It returns once every byte is queued to the peer, or with the
// number of bytes queued and an error.
func (c *streamConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	ctx := c.wdl.context()
	if ctx.Err() != nil {
		return 0, c.writeError(ctx, ctx.Err())
	}
	chunk := c.conn.Limits().InlineLimit
	n := 0
	for n < len(b) {
		m := min(len(b)-n, chunk)
		if err := c.conn.Send(ctx, b[n:n+m]); err != nil {
			return n, c.writeError(ctx, err)
		}
		n += m
		c.sent += uint64(m)
	}
	return n, nil
}

func (c *streamConn) writeError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); errors.Is(cause, os.ErrDeadlineExceeded) {
			return c.opError("write", cause)
		}
		return c.opError("write", net.ErrClosed)
	}
	return c.opError("write", err)
}

func (c *streamConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: Network, Source: c.local, Addr: c.remote, Err: err}
}

// Close closes the connection. Bytes already written are delivered: Close
// waits, for at most a couple of seconds, until the peer has taken them.
// Blocked Reads and Writes return net.ErrClosed. A second Close returns
// net.ErrClosed.
func (c *streamConn) Close() error {
	err := c.opError("close", net.ErrClosed)
	c.closeOnce.Do(func() {
		err = nil
		c.mu.Lock()
		c.closed = true
		c.chunks, c.buffered = nil, 0
		c.broadcastLocked()
		c.mu.Unlock()
		c.cancel() // stops blocked writers
		c.rdl.stop()
		c.wdl.stop()

		c.wmu.Lock()
		sent := c.sent
		c.wmu.Unlock()
		var fin [finSize]byte
		fin[0] = finCall
		binary.LittleEndian.PutUint64(fin[1:], sent)
		ctx, cancel := context.WithTimeout(context.Background(), closeLinger)
		_, _ = c.conn.Call(ctx, fin[:])
		cancel()
		if cerr := c.conn.Close(); cerr != nil {
			err = c.opError("close", cerr)
		}
	})
	return err
}

// LocalAddr returns the port's address on the server side, or an empty
// Addr on the client side (a client's end has no name, as with Unix
// sockets).
func (c *streamConn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the port's address on the client side, or the peer
// process's identity ("pid:N") on the server side.
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both the read and the write deadline.
func (c *streamConn) SetDeadline(t time.Time) error {
	if err := c.checkOpen("set deadline"); err != nil {
		return err
	}
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

// SetReadDeadline sets the deadline for Read calls, including those
// already blocked.
func (c *streamConn) SetReadDeadline(t time.Time) error {
	if err := c.checkOpen("set read deadline"); err != nil {
		return err
	}
	c.rdl.set(t)
	return nil
}

// SetWriteDeadline sets the deadline for Write calls, including those
// already blocked.
func (c *streamConn) SetWriteDeadline(t time.Time) error {
	if err := c.checkOpen("set write deadline"); err != nil {
		return err
	}
	c.wdl.set(t)
	return nil
}

func (c *streamConn) checkOpen(op string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError(op, net.ErrClosed)
	}
	return nil
}

// Conn returns the underlying kalpc connection of a net.Conn made by this
// package's Listener or Dialer, for its peer credentials and limits.
func Conn(c net.Conn) (*alpc.Conn, bool) {
	sc, ok := c.(*streamConn)
	if !ok {
		return nil, false
	}
	return sc.conn, true
}

func peerAddr(cred alpc.Credentials) Addr {
	return Addr(fmt.Sprintf("pid:%d", cred.PID))
}

// requestPeer is a connecting client's address: its verified pod identity
// on a brokered port, else its process id.
func requestPeer(p alpc.Peer) Addr {
	switch {
	case p.Identity != nil:
		return Addr(fmt.Sprintf("pod:%s/%s", p.Identity.Namespace, p.Identity.PodName))
	case p.Credentials != nil:
		return peerAddr(*p.Credentials)
	}
	return ""
}
