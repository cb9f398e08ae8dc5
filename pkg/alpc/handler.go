package alpc

import (
	"context"
	"time"
)

// Handler serves requests a connection's peer sends. Calls run concurrently
// (up to Config.MaxConcurrentHandlers), each in its own goroutine; one-way
// messages run one at a time, in the order they were sent. A handler may
// itself Call the peer (a callback) on req.Conn(), and
// the connection keeps serving while it waits. ctx is cancelled when the
// caller cancels, when the caller's deadline passes, or when the connection
// ends. The returned bytes are the reply; a returned error reaches the
// caller as a *RemoteError (use Errorf to choose its Code). For one-way
// requests the return values are discarded.
type Handler interface {
	ServeALPC(ctx context.Context, req *Request) ([]byte, error)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, req *Request) ([]byte, error)

// ServeALPC calls f(ctx, req).
func (f HandlerFunc) ServeALPC(ctx context.Context, req *Request) ([]byte, error) {
	return f(ctx, req)
}

var _ Handler = HandlerFunc(nil)

// Request is a request received from the peer. Its methods are meant for the
// handler serving it and are not safe for concurrent use.
type Request struct {
	conn    *Conn
	id      uint64
	oneWay  bool
	payload []byte          // inline payload, or the copy of sp
	sp      *sectionPayload // payload in the peer's section, until copied or viewed
	// copied is sp once Payload copied it: the peer's buffer stays lent
	// until the request finishes, so that the copies a peer makes us hold
	// never exceed the memory it has lent (see inSection.lend).
	copied  *sectionPayload
	view    *View
	timeout time.Duration
	// replyLoan, set by ReplyLoan, is sent as the reply.
	replyLoan *Loan

	ctx    context.Context
	cancel context.CancelFunc
}

// Conn returns the connection the request arrived on; handlers use it to
// call back into the peer.
func (r *Request) Conn() *Conn { return r.conn }

// Payload returns the request's bytes. They belong to the handler. A
// payload that arrived in shared memory is copied on the first call, and the
// memory returned to the peer when the handler returns (so that what a peer
// can make handlers copy never exceeds what it lent: MaxSectionBytes); use
// View to read it in place instead. Until then the peer's section budget
// counts it: a handler that waits on a large callback reply from the same
// peer competes with its own request for that budget.
// The copy is taken once, byte by byte: if the peer writes to its memory
// meanwhile, the copy may mix bytes from before and after that write (it is
// not an atomic snapshot), but it never changes afterwards, so validate the
// copy and then use it.
// A handler that took the View and released it has given a shared-memory
// payload back to the peer: Payload then panics, as View.Bytes does after
// Release (call Payload before releasing the View if it needs both).
func (r *Request) Payload() []byte {
	switch {
	case r.payload != nil:
	case r.sp != nil:
		r.payload = privateCopy(r.sp.bytes())
		r.copied, r.sp = r.sp, nil
	case r.view != nil:
		r.payload = privateCopy(r.view.Bytes())
	}
	return r.payload
}

// View returns the request's payload without copying it: for a payload in
// shared memory, a read-only view into the peer's section. The handler owns
// the View and must Release it (it may keep it after returning). The peer
// may still be writing to its memory: treat the bytes as untrusted input
// that can change while you read them. View returns the same View on every
// call.
func (r *Request) View() *View {
	if r.view == nil {
		r.view = newView(r.conn, r.payload, r.sp)
		r.sp = nil
	}
	return r.view
}

// finish ends the request: its context is released, and a payload nobody
// looked at goes back to the peer.
func (r *Request) finish() {
	r.cancel()
	if r.sp != nil {
		r.conn.releasePayload(r.sp)
		r.sp = nil
	}
	if r.copied != nil {
		r.conn.releasePayload(r.copied)
		r.copied = nil
	}
}

// OneWay reports whether the peer expects no reply (it used Send).
func (r *Request) OneWay() bool { return r.oneWay }

// ID returns the request's id, unique among the peer's requests on this
// connection.
func (r *Request) ID() uint64 { return r.id }

// Timeout returns the caller's remaining time when it sent the request, or
// zero if it had no deadline. The handler's context already carries it.
func (r *Request) Timeout() time.Duration { return r.timeout }
