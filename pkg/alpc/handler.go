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

// Request is a request received from the peer.
type Request struct {
	conn    *Conn
	id      uint64
	oneWay  bool
	payload []byte
	timeout time.Duration

	ctx    context.Context
	cancel context.CancelFunc
}

// Conn returns the connection the request arrived on; handlers use it to
// call back into the peer.
func (r *Request) Conn() *Conn { return r.conn }

// Payload returns the request's bytes. They belong to the handler.
func (r *Request) Payload() []byte { return r.payload }

// OneWay reports whether the peer expects no reply (it used Send).
func (r *Request) OneWay() bool { return r.oneWay }

// ID returns the request's id, unique among the peer's requests on this
// connection.
func (r *Request) ID() uint64 { return r.id }

// Timeout returns the caller's remaining time when it sent the request, or
// zero if it had no deadline. The handler's context already carries it.
func (r *Request) Timeout() time.Duration { return r.timeout }
