// Package endpoint lets kalpc's examples run unchanged in two places:
//
//   - in a Kubernetes pod with the kalpc sidecar (KALPC_SOCKET is set): the
//     server publishes a declared ConnectionPort by name with alpc.Publish,
//     the client reaches it with alpc.Connect, and the sidecars verify
//     both pods' identities first;
//   - on one machine without Kubernetes: the server listens on a socket
//     path with alpc.Listen and the client dials it with alpc.Dial.
//
// Either way the result is the same *alpc.Conn; only how the two processes
// find each other differs. Copy this file along with an example, or call
// alpc.Publish/alpc.Connect (or alpc.Listen/alpc.Dial) directly if your
// program only ever runs one way.
package endpoint

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// Addr names a connection port both ways.
type Addr struct {
	// Port is the ConnectionPort's name, used through the sidecar: "name"
	// for a server (always its own namespace), "namespace/name" or "name"
	// for a client.
	Port string
	// Socket is the port's socket path, used without the sidecar.
	Socket string
}

// RegisterFlags adds -port and -socket to fs, with the given defaults.
func (a *Addr) RegisterFlags(fs *flag.FlagSet, port, socket string) {
	fs.StringVar(&a.Port, "port", port, `with the kalpc sidecar (KALPC_SOCKET set): the ConnectionPort, "name" or "namespace/name"`)
	fs.StringVar(&a.Socket, "socket", socket, "without the sidecar: the port's socket path")
}

// Brokered reports whether this process runs next to a kalpc sidecar: the
// sidecar injector sets KALPC_SOCKET in every application container.
func Brokered() bool { return os.Getenv(alpc.EnvSocket) != "" }

// String says how the port is reached.
func (a Addr) String() string {
	if Brokered() {
		return "port " + a.Port + " (through the kalpc sidecar)"
	}
	return "socket " + a.Socket
}

// Request is a client's connection request, from either kind of port.
type Request struct {
	// Message is the client's connection message.
	Message []byte
	// Peer describes the client: its pod identity as verified by the
	// sidecars, or the kernel-reported process credentials.
	Peer string

	accept func([]byte) (*alpc.Conn, error)
	reject func(string) error
}

// Accept accepts the request with reply and returns the server's end of
// the new connection.
func (r *Request) Accept(reply []byte) (*alpc.Conn, error) { return r.accept(reply) }

// Reject refuses the request; the client receives reason.
func (r *Request) Reject(reason string) error { return r.reject(reason) }

// Listener is a published connection port.
type Listener struct {
	accept func(context.Context) (*Request, error)
	close  func() error
}

// Listen publishes the port: by name through the sidecar, else at the
// socket path. cfg.Handler serves every accepted connection's requests.
func Listen(ctx context.Context, a Addr, cfg *alpc.Config) (*Listener, error) {
	if Brokered() {
		p, err := alpc.Publish(ctx, a.Port, cfg)
		if err != nil {
			return nil, err
		}
		return &Listener{close: p.Close, accept: func(ctx context.Context) (*Request, error) {
			req, err := p.Accept(ctx)
			if err != nil {
				return nil, err
			}
			return &Request{Message: req.Message, Peer: "pod " + req.Peer.String(), accept: req.Accept, reject: req.Reject}, nil
		}}, nil
	}
	l, err := alpc.Listen(a.Socket, cfg)
	if err != nil {
		return nil, err
	}
	return &Listener{close: l.Close, accept: func(ctx context.Context) (*Request, error) {
		req, err := l.Accept(ctx)
		if err != nil {
			return nil, err
		}
		c := req.Credentials
		return &Request{Message: req.Message, Peer: fmt.Sprintf("pid %d uid %d", c.PID, c.UID), accept: req.Accept, reject: req.Reject}, nil
	}}, nil
}

// Accept waits for the next connection request, which the caller must
// Accept or Reject.
func (l *Listener) Accept(ctx context.Context) (*Request, error) { return l.accept(ctx) }

// Close unpublishes the port; accepted connections stay open.
func (l *Listener) Close() error { return l.close() }

// Dial connects to the port, sending msg as the connection message. It
// retries for up to wait while the server is not there yet (a pod that has
// not published yet, or a process that has not started listening), so
// client and server may start in any order.
func Dial(ctx context.Context, a Addr, msg []byte, cfg *alpc.Config, wait time.Duration) (*alpc.Conn, error) {
	deadline := time.Now().Add(wait)
	for {
		var conn *alpc.Conn
		var err error
		if Brokered() {
			conn, err = alpc.Connect(ctx, a.Port, msg, cfg)
		} else {
			conn, err = alpc.Dial(ctx, a.Socket, msg, cfg)
		}
		notYet := errors.Is(err, alpc.ErrNoServer) || errors.Is(err, alpc.ErrBrokerUnavailable) || errors.Is(err, alpc.ErrNoPort)
		if !notYet || time.Now().After(deadline) {
			return conn, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
