// Package wire defines kalpc's on-the-wire message format: a fixed 32-byte
// little-endian header followed by the payload, one message per
// SOCK_SEQPACKET datagram. Decoding is strict: anything a well-behaved peer
// never sends is an error, and the caller ends the connection.
//
// The format is documented for humans in docs/protocol.md; keep both in step.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderSize is the size of the fixed header that starts every datagram.
const HeaderSize = 32

// Magic identifies a kalpc datagram ("KA" in little-endian byte order).
const Magic uint16 = 0x414B

// Version is the protocol version this package speaks.
const Version uint8 = 1

// Type is a message type.
type Type uint8

// Message types. The values are part of the protocol; never renumber.
const (
	// TypeConnect opens a connection: Params followed by the connection message.
	TypeConnect Type = 1
	// TypeAccept accepts a connection: Params followed by the reply message.
	TypeAccept Type = 2
	// TypeReject refuses a connection: the payload is the reason (UTF-8).
	TypeReject Type = 3
	// TypeHello is the symmetric handshake on a channel that was connected
	// elsewhere (handed over by fd): Params, no message.
	TypeHello Type = 4
	// TypeRequest carries a call (or, with FlagOneWay, a one-way message).
	// Aux64 is the caller's remaining timeout in nanoseconds (0: none).
	TypeRequest Type = 5
	// TypeReply answers the request with the same ID.
	TypeReply Type = 6
	// TypeError answers the request with the same ID with an error: Aux32 is
	// the error code, the payload is the message (UTF-8).
	TypeError Type = 7
	// TypeCancel tells the peer the caller gave up on request ID.
	TypeCancel Type = 8
	// TypeCredit returns Aux32 one-way request slots to the sender.
	TypeCredit Type = 9
	// TypeSection hands the peer a sealed memfd (one fd): ID is the section
	// id, Aux64 its size in bytes.
	TypeSection Type = 10
	// TypeRelease returns section buffers to their owner: the payload is a
	// list of Extents.
	TypeRelease Type = 11
	// TypeGrant hands the peer a direct-access region (one fd): ID is the
	// region id, Aux64 its size, Aux32 its access mode.
	TypeGrant Type = 12
	// TypeRevoke withdraws region ID.
	TypeRevoke Type = 13
	// TypeDrop retires section ID: its owner will not reference it again
	// (every buffer in it was released), and the receiver unmaps it.
	TypeDrop Type = 14
	// TypeGoAway announces that the sender is shutting the connection down
	// (Aux32 GoAwayAnnounce): the receiver starts no new calls or one-way
	// messages and answers with Aux32 GoAwayAck once every request it
	// started before is written, so that the announcer knows all of them
	// have arrived.
	TypeGoAway Type = 15

	maxType = TypeGoAway
)

// Aux32 values of TypeGoAway.
const (
	GoAwayAnnounce uint32 = 0
	GoAwayAck      uint32 = 1
)

var typeNames = [...]string{
	TypeConnect: "connect", TypeAccept: "accept", TypeReject: "reject", TypeHello: "hello",
	TypeRequest: "request", TypeReply: "reply", TypeError: "error", TypeCancel: "cancel",
	TypeCredit: "credit", TypeSection: "section", TypeRelease: "release", TypeGrant: "grant",
	TypeRevoke: "revoke", TypeDrop: "drop", TypeGoAway: "go-away",
}

func (t Type) String() string {
	if t >= 1 && t <= maxType {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Flags modify a message.
type Flags uint16

const (
	// FlagOneWay marks a request that expects no reply.
	FlagOneWay Flags = 1 << 0
	// FlagSection marks a request, reply or error whose payload is a
	// SectionRef (the bytes live in a shared-memory section), not inline data.
	FlagSection Flags = 1 << 1
)

// rule is what a message type may carry.
type rule struct {
	flags      Flags // allowed flags
	fds        uint8 // exact number of fds required
	needID     bool  // ID must be non-zero
	maxPayload int   // -1: no fixed bound (checked against the inline limit by the caller)
	minPayload int
}

var rules = [...]rule{
	TypeConnect: {minPayload: ParamsSize, maxPayload: ParamsSize + MaxHandshakeMessage},
	TypeAccept:  {minPayload: ParamsSize, maxPayload: ParamsSize + MaxHandshakeMessage},
	TypeReject:  {maxPayload: MaxHandshakeMessage},
	TypeHello:   {minPayload: ParamsSize, maxPayload: ParamsSize},
	TypeRequest: {flags: FlagOneWay | FlagSection, needID: true, maxPayload: -1},
	TypeReply:   {flags: FlagSection, needID: true, maxPayload: -1},
	TypeError:   {flags: FlagSection, needID: true, maxPayload: -1},
	TypeCancel:  {needID: true},
	TypeCredit:  {},
	TypeSection: {fds: 1, needID: true},
	TypeRelease: {maxPayload: -1},
	TypeGrant:   {fds: 1, needID: true},
	TypeRevoke:  {needID: true},
	TypeDrop:    {needID: true},
	TypeGoAway:  {},
}

// MaxHandshakeMessage bounds connection, accept and reject messages.
const MaxHandshakeMessage = 16 << 10

// MaxFDs is the most descriptors any single message may carry.
const MaxFDs = 1

// Header is the decoded fixed header.
//
//	offset size field
//	0      2    magic (0x414B, "KA")
//	2      1    version (1)
//	3      1    type
//	4      2    flags
//	6      1    number of fds attached (SCM_RIGHTS)
//	7      1    reserved, zero
//	8      8    id
//	16     4    payload length
//	20     4    aux32 (type specific)
//	24     8    aux64 (type specific)
type Header struct {
	Type   Type
	Flags  Flags
	NFDs   uint8
	ID     uint64
	Length uint32
	Aux32  uint32
	Aux64  uint64
}

// Put encodes h into b, which must be at least HeaderSize bytes.
func (h *Header) Put(b []byte) {
	_ = b[HeaderSize-1]
	binary.LittleEndian.PutUint16(b[0:], Magic)
	b[2] = Version
	b[3] = byte(h.Type)
	binary.LittleEndian.PutUint16(b[4:], uint16(h.Flags))
	b[6] = h.NFDs
	b[7] = 0
	binary.LittleEndian.PutUint64(b[8:], h.ID)
	binary.LittleEndian.PutUint32(b[16:], h.Length)
	binary.LittleEndian.PutUint32(b[20:], h.Aux32)
	binary.LittleEndian.PutUint64(b[24:], h.Aux64)
}

// Error is a decoding error: the peer sent something the protocol forbids.
type Error struct {
	Reason string
}

func (e *Error) Error() string { return "malformed message: " + e.Reason }

// ErrMalformed matches every *Error with errors.Is.
var ErrMalformed = errors.New("malformed message")

// Is makes errors.Is(err, ErrMalformed) true for decoding errors.
func (e *Error) Is(target error) bool { return target == ErrMalformed }

func malformed(format string, args ...any) error {
	return &Error{Reason: fmt.Sprintf(format, args...)}
}

// Parse decodes and validates the datagram b (header and payload). The
// returned payload aliases b.
func Parse(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, nil, malformed("datagram of %d bytes is shorter than the %d-byte header", len(b), HeaderSize)
	}
	if m := binary.LittleEndian.Uint16(b[0:]); m != Magic {
		return h, nil, malformed("bad magic %#04x", m)
	}
	if v := b[2]; v != Version {
		return h, nil, malformed("unsupported protocol version %d (want %d)", v, Version)
	}
	h.Type = Type(b[3])
	h.Flags = Flags(binary.LittleEndian.Uint16(b[4:]))
	h.NFDs = b[6]
	if b[7] != 0 {
		return h, nil, malformed("reserved header byte is %d, not zero", b[7])
	}
	h.ID = binary.LittleEndian.Uint64(b[8:])
	h.Length = binary.LittleEndian.Uint32(b[16:])
	h.Aux32 = binary.LittleEndian.Uint32(b[20:])
	h.Aux64 = binary.LittleEndian.Uint64(b[24:])

	if h.Type < 1 || h.Type > maxType {
		return h, nil, malformed("unknown message type %d", uint8(h.Type))
	}
	r := rules[h.Type]
	if h.Flags&^r.flags != 0 {
		return h, nil, malformed("%v message with unknown flags %#x", h.Type, uint16(h.Flags&^r.flags))
	}
	if h.NFDs != r.fds {
		return h, nil, malformed("%v message declares %d fds, want %d", h.Type, h.NFDs, r.fds)
	}
	if r.needID && h.ID == 0 {
		return h, nil, malformed("%v message with id 0", h.Type)
	}
	payload := b[HeaderSize:]
	if uint64(h.Length) != uint64(len(payload)) {
		return h, nil, malformed("%v message declares %d payload bytes but carries %d", h.Type, h.Length, len(payload))
	}
	if len(payload) < r.minPayload {
		return h, nil, malformed("%v message payload of %d bytes is shorter than %d", h.Type, len(payload), r.minPayload)
	}
	if r.maxPayload >= 0 && len(payload) > r.maxPayload {
		return h, nil, malformed("%v message payload of %d bytes exceeds %d", h.Type, len(payload), r.maxPayload)
	}
	if h.Flags&FlagSection != 0 && len(payload) != SectionRefSize {
		return h, nil, malformed("%v message with a section reference of %d bytes, want %d", h.Type, len(payload), SectionRefSize)
	}
	switch h.Type {
	case TypeCredit:
		if h.Aux32 == 0 {
			return h, nil, malformed("credit message returns 0 slots")
		}
	case TypeRelease:
		if len(payload) == 0 || len(payload)%ExtentSize != 0 {
			return h, nil, malformed("release message payload of %d bytes is not a non-empty list of %d-byte extents", len(payload), ExtentSize)
		}
	}
	return h, payload, nil
}
