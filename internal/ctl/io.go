package ctl

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// maxFDs is the most descriptors Read makes room for; more arrive truncated
// (MSG_CTRUNC), which is refused.
const maxFDs = 1

// Write sends m on c, with f's descriptor attached as SCM_RIGHTS when the
// type carries one. The caller keeps ownership of f.
func Write(c *net.UnixConn, m *Message, f *os.File) error {
	b, err := Encode(m)
	if err != nil {
		return err
	}
	want := m.Type.FDs()
	switch {
	case want == 1 && f == nil:
		return fmt.Errorf("ctl: %v message needs a descriptor", m.Type)
	case want == 0 && f != nil:
		return fmt.Errorf("ctl: %v message carries no descriptor", m.Type)
	}
	var oob []byte
	if f != nil {
		if oob, err = rights(f); err != nil {
			return fmt.Errorf("ctl: sending %v message: %w", m.Type, err)
		}
	}
	n, oobn, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("ctl: sending %v message: %w", m.Type, err)
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("ctl: short write of %v message", m.Type)
	}
	return nil
}

// readBufs recycles Read's datagram buffers. A fresh 64 KiB buffer per
// message, zeroed and then collected, was the largest single cost of a
// brokered connect in each sidecar (about 12% of its CPU zeroing memory,
// plus the garbage collection; see TestConnectBench). Decode copies what it
// keeps, so a buffer is free again when Read returns, and only buf[:n], the
// bytes this read received, is ever looked at. The pool holds at most the
// buffers in use at once, and the garbage collector empties it.
var readBufs = sync.Pool{New: func() any {
	b := make([]byte, MaxDatagram+1)
	return &b
}}

// Read receives one message from c. It returns io.EOF when the peer closed
// the socket. A message that carries a descriptor comes with it as an
// *os.File the caller owns; descriptors that arrive with a message that
// does not carry one, or with a malformed message, are closed and the
// message refused with an error matching ErrMalformed.
func Read(c *net.UnixConn) (*Message, *os.File, error) {
	// Wait for a message before allocating its buffer: a connection that
	// sends nothing (a flood of idle ones) costs no 64 KiB buffer.
	if err := waitReadable(c); err != nil {
		return nil, nil, err
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	oob := make([]byte, rightsSpace(maxFDs))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, nil, err
	}
	fds, ferr := parseRights(oob[:oobn])
	closeAll := func() { closeFDs(fds) }
	switch {
	case ferr != nil:
		closeAll()
		return nil, nil, errorf("bad control message: %v", ferr)
	case flags&msgCtrunc != 0:
		closeAll()
		return nil, nil, errorf("too many descriptors attached")
	case flags&msgTrunc != 0:
		closeAll()
		return nil, nil, errorf("datagram larger than %d bytes", MaxDatagram)
	case n == 0 && len(fds) == 0:
		return nil, nil, io.EOF
	}
	m, err := Decode(buf[:n])
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	if len(fds) != m.Type.FDs() {
		closeAll()
		return nil, nil, errorf("%v message with %d descriptors, want %d", m.Type, len(fds), m.Type.FDs())
	}
	var f *os.File
	if len(fds) == 1 {
		f = os.NewFile(uintptr(fds[0]), "kalpc-channel")
	}
	return m, f, nil
}

// Deadline applies ctx's deadline to c and makes ctx's cancellation
// interrupt blocked reads and writes, until the returned function is
// called: stop then clears c's deadline, so that ctx bounds only the steps
// between the two calls and c, if kept, lives on (a published port's
// control connection outlives the context that bounded its publication).
func Deadline(ctx context.Context, c *net.UnixConn) (stop func()) {
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	var mu sync.Mutex
	stopped := false
	s := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			_ = c.SetDeadline(time.Unix(1, 0))
		}
	})
	return func() {
		s()
		// The AfterFunc may be running: once stopped is set it sets no
		// deadline, so the one cleared here stays cleared.
		mu.Lock()
		stopped = true
		mu.Unlock()
		_ = c.SetDeadline(time.Time{})
	}
}

// Dial connects to the SOCK_SEQPACKET socket at path.
func Dial(ctx context.Context, path string) (*net.UnixConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}
