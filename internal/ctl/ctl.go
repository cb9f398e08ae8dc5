package ctl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/kalpc/kalpc/internal/podid"
)

// Protocol constants.
const (
	// Magic opens every datagram: "KC" in little-endian byte order.
	Magic uint16 = 0x434B
	// Version is the protocol version this package speaks. A receiver
	// refuses any other.
	Version uint8 = 1
	// HeaderSize is the size of the fixed header.
	HeaderSize = 8
	// MaxDatagram bounds one datagram, header included.
	MaxDatagram = 64 << 10
	// MaxUserMessage bounds a connection message, an accept reply and a
	// reject reason. It equals alpc.MaxConnectionMessage.
	MaxUserMessage = 16 << 10
	// MaxToken bounds a ServiceAccount token.
	MaxToken = 16 << 10
	// MaxName bounds a namespace, port, pod or ServiceAccount name.
	MaxName = 253
	// MaxErrorMessage bounds an error message.
	MaxErrorMessage = 4 << 10
)

// Type is a message type. The values are part of the protocol.
type Type uint8

// Message types between an application and its sidecar (pod socket).
const (
	// TypePublish (app → sidecar) asks to publish port Name in the pod's
	// namespace; the control connection stays open while it is published.
	TypePublish Type = 1
	// TypePublished (sidecar → app) confirms a Publish and carries the
	// port's message policy.
	TypePublished Type = 2
	// TypeConnect (app → sidecar) asks to connect to port Namespace/Name
	// with connection message Payload. An empty Namespace means the pod's
	// own namespace.
	TypeConnect Type = 3
	// TypeIncoming (sidecar → server app) delivers connection request ID
	// from the verified client Peer, with its connection message Payload.
	TypeIncoming Type = 4
	// TypeAccept (server app → sidecar) accepts request ID with reply
	// Payload.
	TypeAccept Type = 5
	// TypeReject (server app → sidecar) rejects request ID with Reason.
	TypeReject Type = 6
	// TypeChannel (sidecar → app) hands over one end of a new channel (one
	// descriptor) for request ID (0 on the client side), with the port's
	// Policy, the Peer's identity and, for the client, the server's reply
	// Payload.
	TypeChannel Type = 7
	// TypeError (sidecar → app) reports a failure: of request ID (server
	// side), or of the Publish or Connect (ID 0).
	TypeError Type = 8
	// TypeClosed (server app → sidecar) reports that the channel of
	// accepted request ID has ended.
	TypeClosed Type = 9
)

// Message types between two sidecars (a port's socket in the node directory).
const (
	// TypePeerHello (server sidecar → client sidecar) is the server's first
	// message: its pod's Token.
	TypePeerHello Type = 16
	// TypePeerConnect (client sidecar → server sidecar) presents the
	// client pod's Token and asks for port Namespace/Name with connection
	// message Payload.
	TypePeerConnect Type = 17
	// TypePeerAccepted (server sidecar → client sidecar) carries the
	// client's end of the new channel (one descriptor), the server app's
	// reply Payload and the port's Policy.
	TypePeerAccepted Type = 18
	// TypePeerRefused (server sidecar → client sidecar) refuses the
	// request with Code and Reason.
	TypePeerRefused Type = 19
)

var typeNames = map[Type]string{
	TypePublish: "publish", TypePublished: "published", TypeConnect: "connect",
	TypeIncoming: "incoming", TypeAccept: "accept", TypeReject: "reject",
	TypeChannel: "channel", TypeError: "error", TypeClosed: "closed",
	TypePeerHello: "peer-hello", TypePeerConnect: "peer-connect",
	TypePeerAccepted: "peer-accepted", TypePeerRefused: "peer-refused",
}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// FDs returns how many descriptors a message of type t carries.
func (t Type) FDs() int {
	if t == TypeChannel || t == TypePeerAccepted {
		return 1
	}
	return 0
}

// Code says why a request failed. The values are part of the protocol; each
// reaches the application as a distinct error.
type Code uint16

// Failure codes.
const (
	// CodeInvalid: the request was malformed or named an invalid port.
	CodeInvalid Code = 1
	// CodePortNotFound: no ConnectionPort of that name exists.
	CodePortNotFound Code = 2
	// CodeNotServer: the pod is not selected by the port's spec.servers.
	CodeNotServer Code = 3
	// CodeDenied: the client is not allowed by the port's client rules.
	CodeDenied Code = 4
	// CodeNoServer: no live server endpoint of the port on this node.
	CodeNoServer Code = 5
	// CodeServerIdentity: no server endpoint passed identity verification.
	CodeServerIdentity Code = 6
	// CodeUnauthenticated: the peer's identity could not be verified.
	CodeUnauthenticated Code = 7
	// CodeRejected: the server application rejected the request (Reason).
	CodeRejected Code = 8
	// CodeLimit: the server pod has reached the port's maxConnections.
	CodeLimit Code = 9
	// CodeUnavailable: the sidecar cannot serve the request now (API
	// server unreachable, caches not synced, server app not answering).
	CodeUnavailable Code = 10
	// CodePortInUse: the pod already publishes the port.
	CodePortInUse Code = 11
)

var codeNames = map[Code]string{
	CodeInvalid: "invalid request", CodePortNotFound: "port not found", CodeNotServer: "not allowed to serve",
	CodeDenied: "access denied", CodeNoServer: "no server on this node", CodeServerIdentity: "server identity not verified",
	CodeUnauthenticated: "unauthenticated", CodeRejected: "rejected", CodeLimit: "connection limit reached",
	CodeUnavailable: "unavailable", CodePortInUse: "port in use",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// Policy is a port's message policy, handed to both applications of a
// channel.
type Policy struct {
	InlineLimit        uint32
	MaxMessageBytes    uint64
	MaxSectionBytes    uint64
	MaxPendingMessages uint32
	MaxConnections     uint32
	DirectAccess       bool
}

// Message is one control message. Which fields a type carries is fixed
// (see Encode); the others are zero.
type Message struct {
	Type      Type
	ID        uint64
	Namespace string
	Name      string
	Token     string
	Payload   []byte
	Reason    string
	Code      Code
	Peer      podid.Identity
	Policy    Policy
}

// Error is a decoding error: the datagram breaks the protocol.
type Error struct{ Reason string }

func (e *Error) Error() string { return "ctl: malformed message: " + e.Reason }

func errorf(format string, args ...any) error {
	return &Error{Reason: fmt.Sprintf(format, args...)}
}

// ErrMalformed matches every *Error.
var ErrMalformed = errors.New("ctl: malformed message")

// Is reports whether target is ErrMalformed.
func (e *Error) Is(target error) bool { return target == ErrMalformed }

// Encode returns m as one datagram. It fails if a field is out of range.
func Encode(m *Message) ([]byte, error) {
	e := encoder{b: make([]byte, HeaderSize, 256)}
	switch m.Type {
	case TypePublish:
		e.name(m.Name)
	case TypePublished:
		e.policy(&m.Policy)
	case TypeConnect:
		e.optName(m.Namespace)
		e.name(m.Name)
		e.bytes(m.Payload, MaxUserMessage)
	case TypeIncoming:
		e.u64(m.ID)
		e.identity(&m.Peer)
		e.bytes(m.Payload, MaxUserMessage)
	case TypeAccept:
		e.u64(m.ID)
		e.bytes(m.Payload, MaxUserMessage)
	case TypeReject:
		e.u64(m.ID)
		e.str(m.Reason, MaxUserMessage)
	case TypeChannel:
		e.u64(m.ID)
		e.policy(&m.Policy)
		e.identity(&m.Peer)
		e.bytes(m.Payload, MaxUserMessage)
	case TypeError:
		e.u64(m.ID)
		e.code(m.Code)
		e.str(m.Reason, MaxErrorMessage)
	case TypeClosed:
		e.u64(m.ID)
	case TypePeerHello:
		e.str(m.Token, MaxToken)
	case TypePeerConnect:
		e.str(m.Token, MaxToken)
		e.name(m.Namespace)
		e.name(m.Name)
		e.bytes(m.Payload, MaxUserMessage)
	case TypePeerAccepted:
		e.policy(&m.Policy)
		e.bytes(m.Payload, MaxUserMessage)
	case TypePeerRefused:
		e.code(m.Code)
		e.str(m.Reason, MaxErrorMessage)
	default:
		return nil, fmt.Errorf("ctl: cannot encode message of %v", m.Type)
	}
	if e.err != nil {
		return nil, fmt.Errorf("ctl: cannot encode %v message: %w", m.Type, e.err)
	}
	body := len(e.b) - HeaderSize
	if len(e.b) > MaxDatagram {
		return nil, fmt.Errorf("ctl: %v message of %d bytes exceeds %d", m.Type, len(e.b), MaxDatagram)
	}
	binary.LittleEndian.PutUint16(e.b[0:], Magic)
	e.b[2] = Version
	e.b[3] = byte(m.Type)
	binary.LittleEndian.PutUint32(e.b[4:], uint32(body))
	return e.b, nil
}

// Decode parses one datagram strictly. The returned message does not alias b.
func Decode(b []byte) (*Message, error) {
	if len(b) < HeaderSize {
		return nil, errorf("datagram of %d bytes is shorter than the %d-byte header", len(b), HeaderSize)
	}
	if len(b) > MaxDatagram {
		return nil, errorf("datagram of %d bytes exceeds %d", len(b), MaxDatagram)
	}
	if m := binary.LittleEndian.Uint16(b[0:]); m != Magic {
		return nil, errorf("bad magic %#04x", m)
	}
	if v := b[2]; v != Version {
		return nil, errorf("unsupported version %d (this side speaks %d)", v, Version)
	}
	m := &Message{Type: Type(b[3])}
	if n := binary.LittleEndian.Uint32(b[4:]); uint64(n) != uint64(len(b)-HeaderSize) {
		return nil, errorf("length %d does not match the %d body bytes", n, len(b)-HeaderSize)
	}
	d := decoder{b: b[HeaderSize:]}
	switch m.Type {
	case TypePublish:
		m.Name = d.name("name")
	case TypePublished:
		d.policy(&m.Policy)
	case TypeConnect:
		m.Namespace = d.optName("namespace")
		m.Name = d.name("name")
		m.Payload = d.bytes("message", MaxUserMessage)
	case TypeIncoming:
		m.ID = d.id()
		d.identity(&m.Peer)
		m.Payload = d.bytes("message", MaxUserMessage)
	case TypeAccept:
		m.ID = d.id()
		m.Payload = d.bytes("reply", MaxUserMessage)
	case TypeReject:
		m.ID = d.id()
		m.Reason = d.str("reason", MaxUserMessage)
	case TypeChannel:
		m.ID = d.u64("id")
		d.policy(&m.Policy)
		d.identity(&m.Peer)
		m.Payload = d.bytes("reply", MaxUserMessage)
	case TypeError:
		m.ID = d.u64("id")
		m.Code = d.code()
		m.Reason = d.str("reason", MaxErrorMessage)
	case TypeClosed:
		m.ID = d.id()
	case TypePeerHello:
		m.Token = d.token()
	case TypePeerConnect:
		m.Token = d.token()
		m.Namespace = d.name("namespace")
		m.Name = d.name("name")
		m.Payload = d.bytes("message", MaxUserMessage)
	case TypePeerAccepted:
		d.policy(&m.Policy)
		m.Payload = d.bytes("reply", MaxUserMessage)
	case TypePeerRefused:
		m.Code = d.code()
		m.Reason = d.str("reason", MaxErrorMessage)
	default:
		return nil, errorf("unknown message type %d", uint8(m.Type))
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errorf("%d trailing bytes after a %v message", len(d.b), m.Type)
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

type encoder struct {
	b   []byte
	err error
}

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }

func (e *encoder) bytes(v []byte, max int) {
	if len(v) > max && e.err == nil {
		e.err = fmt.Errorf("field of %d bytes exceeds %d", len(v), max)
	}
	e.u32(uint32(len(v)))
	e.b = append(e.b, v...)
}

func (e *encoder) str(v string, max int) {
	if !utf8.ValidString(v) && e.err == nil {
		e.err = errors.New("string is not valid UTF-8")
	}
	e.bytes([]byte(v), max)
}

func (e *encoder) name(v string) {
	if err := checkName(v); err != nil && e.err == nil {
		e.err = err
	}
	e.str(v, MaxName)
}

func (e *encoder) optName(v string) {
	if v == "" {
		e.u32(0)
		return
	}
	e.name(v)
}

func (e *encoder) code(c Code) {
	if _, ok := codeNames[c]; !ok && e.err == nil {
		e.err = fmt.Errorf("unknown code %d", c)
	}
	e.u16(uint16(c))
}

func (e *encoder) identity(id *podid.Identity) {
	e.str(id.Namespace, MaxName)
	e.str(id.ServiceAccount, MaxName)
	e.str(id.PodName, MaxName)
	e.str(id.PodUID, MaxName)
}

func (e *encoder) policy(p *Policy) {
	e.u32(p.InlineLimit)
	e.u64(p.MaxMessageBytes)
	e.u64(p.MaxSectionBytes)
	e.u32(p.MaxPendingMessages)
	e.u32(p.MaxConnections)
	if p.DirectAccess {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.err = errorf("%s needs %d bytes, %d left", what, n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8(what string) uint8 {
	if v := d.take(1, what); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) u16(what string) uint16 {
	if v := d.take(2, what); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (d *decoder) u32(what string) uint32 {
	if v := d.take(4, what); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) u64(what string) uint64 {
	if v := d.take(8, what); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

// id reads a request id, which is never 0.
func (d *decoder) id() uint64 {
	v := d.u64("id")
	if d.err == nil && v == 0 {
		d.err = errorf("request id 0")
	}
	return v
}

func (d *decoder) bytes(what string, max int) []byte {
	n := d.u32(what + " length")
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(max) {
		d.err = errorf("%s of %d bytes exceeds %d", what, n, max)
		return nil
	}
	v := d.take(int(n), what)
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

func (d *decoder) str(what string, max int) string {
	v := d.bytes(what, max)
	if d.err == nil && !utf8.Valid(v) {
		d.err = errorf("%s is not valid UTF-8", what)
		return ""
	}
	return string(v)
}

func (d *decoder) name(what string) string {
	v := d.str(what, MaxName)
	if d.err == nil {
		if err := checkName(v); err != nil {
			d.err = errorf("%s: %v", what, err)
		}
	}
	return v
}

// optName reads a name that may be empty.
func (d *decoder) optName(what string) string {
	v := d.str(what, MaxName)
	if d.err == nil && v != "" {
		if err := checkName(v); err != nil {
			d.err = errorf("%s: %v", what, err)
		}
	}
	return v
}

func (d *decoder) token() string {
	v := d.str("token", MaxToken)
	if d.err == nil && v == "" {
		d.err = errorf("empty token")
	}
	return v
}

func (d *decoder) code() Code {
	c := Code(d.u16("code"))
	if _, ok := codeNames[c]; d.err == nil && !ok {
		d.err = errorf("unknown code %d", uint16(c))
	}
	return c
}

func (d *decoder) identity(id *podid.Identity) {
	id.Namespace = d.str("peer namespace", MaxName)
	id.ServiceAccount = d.str("peer service account", MaxName)
	id.PodName = d.str("peer pod name", MaxName)
	id.PodUID = d.str("peer pod uid", MaxName)
}

func (d *decoder) policy(p *Policy) {
	p.InlineLimit = d.u32("inline limit")
	p.MaxMessageBytes = d.u64("max message bytes")
	p.MaxSectionBytes = d.u64("max section bytes")
	p.MaxPendingMessages = d.u32("max pending messages")
	p.MaxConnections = d.u32("max connections")
	switch d.u8("direct access") {
	case 0:
	case 1:
		p.DirectAccess = true
	default:
		if d.err == nil {
			d.err = errorf("direct access flag is neither 0 nor 1")
		}
	}
}

// checkName validates a Kubernetes object name (a DNS-1123 subdomain, which
// also covers namespace names, DNS-1123 labels).
func checkName(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	if len(s) > MaxName {
		return fmt.Errorf("name of %d bytes exceeds %d", len(s), MaxName)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		switch {
		case alnum:
		case (c == '-' || c == '.') && i > 0 && i < len(s)-1:
		default:
			return fmt.Errorf("%q is not a valid object name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)", s)
		}
	}
	return nil
}

// CheckName reports whether s is a valid namespace or object name.
func CheckName(s string) error { return checkName(s) }
