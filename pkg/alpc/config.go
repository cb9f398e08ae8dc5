package alpc

import (
	"fmt"
	"os"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// Defaults for Config fields.
const (
	// DefaultInlineLimit is the ALPC figure: payloads up to 63 KiB are copied
	// through the socket queue.
	DefaultInlineLimit = 63 << 10
	// DefaultMaxMessageSize bounds any single message.
	DefaultMaxMessageSize = 1 << 30
	// DefaultMaxSectionBytes bounds the shared memory of one connection in
	// each direction.
	DefaultMaxSectionBytes = 1 << 30
	// DefaultMaxPendingCalls bounds requests in flight per direction.
	DefaultMaxPendingCalls = 1024
	// DefaultMaxConcurrentHandlers bounds handlers running at once per Conn.
	DefaultMaxConcurrentHandlers = 256
	// DefaultSocketMode is the file mode of a port's socket.
	DefaultSocketMode os.FileMode = 0o600
	// DefaultHandshakeTimeout bounds how long a connecting client may take
	// to send its connection message.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxPendingConnections bounds connection requests waiting for
	// Accept.
	DefaultMaxPendingConnections = 128
	// DefaultWriteTimeout bounds how long a write waits for the peer to
	// make room in its socket buffer.
	DefaultWriteTimeout = 30 * time.Second

	// MinInlineLimit and MaxInlineLimit bound Config.InlineLimit. The upper
	// bound keeps one inline message inside one datagram with the kernel's
	// default socket buffer sizes.
	MinInlineLimit = wire.MinInlineLimit
	MaxInlineLimit = wire.MaxInlineLimit

	// MaxConnectionMessage bounds connection messages, accept replies and
	// reject reasons.
	MaxConnectionMessage = wire.MaxHandshakeMessage
)

// Config configures a Listener, a dialed Conn, or a Conn made from a file.
// A nil *Config means all defaults. The connection's effective limits are
// negotiated: each side announces its own, and both directions use the
// smaller value.
type Config struct {
	// Handler serves requests the peer sends on the connection. Nil means
	// every call fails with CodeUnimplemented and one-way messages are
	// dropped.
	Handler Handler

	// InlineLimit is the largest payload copied through the socket queue;
	// larger payloads travel through shared memory. Between MinInlineLimit
	// and MaxInlineLimit. Defaults to DefaultInlineLimit (63 KiB).
	InlineLimit int

	// MaxMessageSize is the largest payload this side sends or receives.
	// Defaults to DefaultMaxMessageSize (1 GiB).
	MaxMessageSize int64

	// MaxSectionBytes bounds the shared-memory sections of one connection in
	// each direction: what this side creates to send large messages, and
	// what it maps from its peer (a peer that announces more is a protocol
	// violation). A sender whose sections are full waits for the peer to
	// release buffers until its context ends, then fails with a *LimitError.
	// Defaults to DefaultMaxSectionBytes (1 GiB). A message larger than
	// this cannot be sent. Granted regions this side maps count against it
	// too. The wait for releases is also bounded by WriteTimeout: a peer
	// that does not release enough for that long fails the send (not the
	// connection) with a *LimitError.
	MaxSectionBytes int64

	// DisableSections turns the section technique off on this side: it
	// neither lends nor maps shared-memory sections, so messages larger
	// than the inline limit fail with ErrTooLarge in both directions (a
	// peer that sends a section anyway is a protocol violation). A brokered
	// port whose policy sets maxSectionBytesPerConnection to 0 sets it.
	DisableSections bool

	// AllowDirectAccess lets the peer grant this side direct access to its
	// memory regions, and this side grant regions to the peer (both sides
	// must allow it). Defaults to false.
	AllowDirectAccess bool

	// MaxPendingCalls is the most requests (calls and one-way messages) that
	// may be in flight in each direction. A Call or Send beyond it waits for
	// a slot until its context ends, then fails with a *LimitError. A peer
	// that exceeds it is a protocol violation. Defaults to
	// DefaultMaxPendingCalls (1024).
	MaxPendingCalls int

	// MaxConcurrentHandlers is the most handlers run at once on one Conn;
	// further requests wait in order. Defaults to
	// DefaultMaxConcurrentHandlers (256).
	MaxConcurrentHandlers int

	// WaitForServer makes Dial and Connect wait, until their context ends,
	// while the port has no server, instead of failing at once (gRPC's
	// WaitForReady): Dial while nothing listens at the path (ErrNoPort),
	// Connect while the port has no live server on this node (ErrNoServer,
	// which names the nodes its servers run on). They retry with back-off,
	// up to 500ms apart, so a server that appears is found within about
	// that. When the context ends first, the error matches both the last
	// attempt's error and the context's. Other failures (a rejection, a
	// client the port does not allow, a missing ConnectionPort) are never
	// retried. Use it with a deadline: without one, a port that never gets a
	// server waits until the context is canceled. Defaults to false.
	WaitForServer bool

	// SocketMode is the file mode of the port's socket (Listen only).
	// Defaults to DefaultSocketMode (0600).
	SocketMode os.FileMode

	// HandshakeTimeout bounds how long a client may take to send its
	// connection message after connecting (Listen only). Defaults to
	// DefaultHandshakeTimeout (10s).
	HandshakeTimeout time.Duration

	// MaxPendingConnections bounds connection requests waiting to be
	// accepted; further clients wait in the kernel's backlog (Listen only).
	// Defaults to DefaultMaxPendingConnections (128).
	MaxPendingConnections int

	// WriteTimeout bounds how long any write on the connection waits for
	// room in the peer's socket buffer. A peer that reads nothing for this
	// long (a slow consumer: hostile, stopped or deadlocked) has its
	// connection ended with a *LimitError naming WriteTimeout, so that
	// answers, callbacks, credits and releases to it never wait forever,
	// and neither do Calls and Sends whose context has a later deadline or
	// none. A context that ends first still wins (the Call fails with the
	// context's error and the connection stays up). The peer's reader never
	// waits on handlers, so a live peer drains its socket in microseconds.
	// Defaults to DefaultWriteTimeout (30s); negative means no bound but
	// the context's.
	WriteTimeout time.Duration

	// policyLimited records the limits a brokered port's policy lowered
	// (Policy.apply), for their errors to name the port's field.
	policyLimited policyLimits
}

// withDefaults returns a copy of c with defaults filled in, or an error for
// out-of-range values.
func (c *Config) withDefaults() (Config, error) {
	var out Config
	if c != nil {
		out = *c
	}
	if out.InlineLimit == 0 {
		out.InlineLimit = DefaultInlineLimit
	}
	if out.MaxMessageSize == 0 {
		out.MaxMessageSize = DefaultMaxMessageSize
	}
	if out.MaxPendingCalls == 0 {
		out.MaxPendingCalls = DefaultMaxPendingCalls
	}
	if out.MaxSectionBytes == 0 {
		out.MaxSectionBytes = DefaultMaxSectionBytes
	}
	if out.MaxConcurrentHandlers == 0 {
		out.MaxConcurrentHandlers = DefaultMaxConcurrentHandlers
	}
	if out.SocketMode == 0 {
		out.SocketMode = DefaultSocketMode
	}
	if out.HandshakeTimeout == 0 {
		out.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if out.MaxPendingConnections == 0 {
		out.MaxPendingConnections = DefaultMaxPendingConnections
	}
	if out.WriteTimeout == 0 {
		out.WriteTimeout = DefaultWriteTimeout
	}
	switch {
	case out.InlineLimit < MinInlineLimit || out.InlineLimit > MaxInlineLimit:
		return out, fmt.Errorf("alpc: config: InlineLimit %d outside [%d, %d]", out.InlineLimit, MinInlineLimit, MaxInlineLimit)
	case out.MaxMessageSize < int64(out.InlineLimit):
		return out, fmt.Errorf("alpc: config: MaxMessageSize %d is below InlineLimit %d", out.MaxMessageSize, out.InlineLimit)
	case out.MaxSectionBytes < 0:
		return out, fmt.Errorf("alpc: config: MaxSectionBytes %d is negative", out.MaxSectionBytes)
	case out.MaxPendingCalls < 0 || out.MaxPendingCalls > 1<<20:
		return out, fmt.Errorf("alpc: config: MaxPendingCalls %d outside [1, %d]", out.MaxPendingCalls, 1<<20)
	case out.MaxConcurrentHandlers < 0:
		return out, fmt.Errorf("alpc: config: MaxConcurrentHandlers %d is negative", out.MaxConcurrentHandlers)
	case out.SocketMode&^os.ModePerm != 0:
		return out, fmt.Errorf("alpc: config: SocketMode %v has bits beyond permissions", out.SocketMode)
	case out.HandshakeTimeout < 0:
		return out, fmt.Errorf("alpc: config: HandshakeTimeout %v is negative", out.HandshakeTimeout)
	case out.MaxPendingConnections < 0:
		return out, fmt.Errorf("alpc: config: MaxPendingConnections %d is negative", out.MaxPendingConnections)
	}
	return out, nil
}

func (c *Config) params() wire.Params {
	p := wire.Params{
		InlineLimit:     uint32(c.InlineLimit),
		MaxPendingCalls: uint32(c.MaxPendingCalls),
		MaxMessageSize:  uint64(c.MaxMessageSize),
		MaxSectionBytes: uint64(c.MaxSectionBytes),
		Features:        wire.FeatureSections,
	}
	if c.DisableSections {
		p.MaxSectionBytes = 0
		p.Features &^= wire.FeatureSections
	}
	if c.AllowDirectAccess {
		p.Features |= wire.FeatureDirectAccess
	}
	return p
}

// negotiated are a connection's limits as both sides agreed them in the
// handshake, split by direction where the two differ; Conn.Limits reports
// them to users as a Limits.
type negotiated struct {
	// sendInline is the largest inline payload we may send (the peer's
	// receive buffer); recvInline the largest we accept.
	sendInline, recvInline int
	maxMessage             int64
	window                 int
	// sendSections is the shared memory we may lend the peer (its
	// budget and ours); recvSections what we map from it.
	sendSections, recvSections int64
	// sections: the peer maps our sections; directAccess: both allow grants.
	sections, directAccess bool
}

func negotiate(own *Config, peer wire.Params) negotiated {
	l := negotiated{
		sendInline:   min(own.InlineLimit, int(peer.InlineLimit)),
		recvInline:   own.InlineLimit,
		maxMessage:   min(own.MaxMessageSize, int64(min(peer.MaxMessageSize, 1<<62))),
		window:       min(own.MaxPendingCalls, int(peer.MaxPendingCalls)),
		sendSections: min(own.MaxSectionBytes, int64(min(peer.MaxSectionBytes, 1<<62))),
		recvSections: own.MaxSectionBytes,
		sections:     peer.Features&wire.FeatureSections != 0,
		directAccess: own.AllowDirectAccess && peer.Features&wire.FeatureDirectAccess != 0,
	}
	if own.DisableSections {
		l.sendSections, l.recvSections = 0, 0
		l.sections = false
	}
	return l
}
