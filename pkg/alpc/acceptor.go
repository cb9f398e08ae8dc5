package alpc

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
)

// Acceptor is a connection port this process serves, of either kind: a
// [*Listener] (a socket path, which clients reach with Dial) or a [*Port]
// (published through the pod's kalpc broker, which clients reach with
// Connect). Code that serves connections takes an Acceptor and works with
// both, as code that serves a net.Listener works with any network.
//
// Connections accepted from an Acceptor serve their requests with the
// Handler of the Config it was made with.
type Acceptor interface {
	// Accept waits for the next connection request until ctx ends. The
	// caller must answer it with ConnRequest.Accept or Reject: until then
	// it holds one of the port's MaxPendingConnections. After Close,
	// Accept returns ErrClosed; a Port whose broker went away returns a
	// *BrokerError.
	Accept(ctx context.Context) (*ConnRequest, error)
	// Close stops accepting: no new clients can connect and requests not
	// yet taken by Accept are rejected. Connections already accepted are
	// not affected. Close returns nil the first time, ErrClosed after.
	Close() error
	// Name returns the port's name: a Listener's socket path, or a Port's
	// ConnectionPort name.
	Name() string
}

var (
	_ Acceptor = (*Listener)(nil)
	_ Acceptor = (*Port)(nil)
)

// ConnRequest is a client's request to connect to a port, from either kind
// of Acceptor. It is answered exactly once, with Accept or Reject.
type ConnRequest struct {
	// Message is the client's connection message.
	Message []byte
	// Peer is the client, as far as the port can vouch for it.
	Peer Peer

	answered atomic.Bool
	answer   requestAnswerer
}

// requestAnswerer is how a kind of port answers a request, once.
type requestAnswerer interface {
	accept(reply []byte) (*Conn, error)
	reject(reason string) error
}

// errAnswered is the error for a second answer to a ConnRequest.
var errAnswered = errors.New("alpc: connection request already answered")

// Accept accepts the request, sending reply (at most MaxConnectionMessage
// bytes) to the client, and returns the server's end of the new private
// channel. It serves requests with the Acceptor's Config.Handler; on a
// Port, its limits are restricted by the port's Policy. A reply too large
// leaves the request unanswered.
func (r *ConnRequest) Accept(reply []byte) (*Conn, error) {
	if err := checkHandshakeMessage("accept message", reply); err != nil {
		return nil, err
	}
	if err := r.take(); err != nil {
		return nil, err
	}
	return r.answer.accept(reply)
}

// Reject refuses the request; the client's Dial or Connect fails with a
// *RejectError carrying reason (made valid UTF-8 and truncated to
// MaxConnectionMessage bytes).
func (r *ConnRequest) Reject(reason string) error {
	if err := r.take(); err != nil {
		return err
	}
	return r.answer.reject(reason)
}

// take claims the one answer to the request.
func (r *ConnRequest) take() error {
	if r.answer == nil {
		return errors.New("alpc: connection request not taken from an Acceptor")
	}
	if !r.answered.CompareAndSwap(false, true) {
		return errAnswered
	}
	return nil
}

// Peer is a client asking to connect, as far as the port can vouch for it.
// Exactly one of its fields is set.
type Peer struct {
	// Identity is the client pod's identity as verified by the kalpc
	// brokers: set for a client of a Port, nil for a client of a Listener,
	// for which no broker vouches.
	Identity *Identity
	// Credentials are the client process's kernel-reported credentials
	// (SO_PEERCRED): set for a client of a Listener, nil for a client of a
	// Port, whose process is in another pod and reached this one through
	// the brokers.
	Credentials *Credentials
}

// String describes the peer: its pod identity (as Identity.String), or
// its process credentials.
func (p Peer) String() string {
	switch {
	case p.Identity != nil:
		return p.Identity.String()
	case p.Credentials != nil:
		return fmt.Sprintf("pid %d uid %d gid %d", p.Credentials.PID, p.Credentials.UID, p.Credentials.GID)
	}
	return "unknown peer"
}
