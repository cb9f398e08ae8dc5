package alpcgrpc

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/grpc/metadata"
)

// The native mode's framing. Every kalpc payload starts with a kind byte;
// integers are unsigned varints (encoding/binary's Uvarint), strings and
// byte fields are a varint length followed by the bytes. docs/grpc.md
// describes the same format for humans; keep both in step.
const (
	// kindUnary (call, client to server): flags, stream id, method,
	// content-subtype, metadata, then the request message (the rest).
	kindUnary byte = 1
	// kindStream (call, client to server) opens a stream: flags, stream id,
	// method, content-subtype, metadata. The call lasts as long as the
	// server's handler; its reply is the stream's result.
	kindStream byte = 2
	// kindResult (reply to kindUnary or kindStream): flags, header metadata,
	// trailer metadata, status (a google.rpc.Status message, empty for OK),
	// the number of messages the server sent on the stream, then the
	// response message (the rest, unary only).
	kindResult byte = 3
	// kindMsg (one-way, either direction): stream id, flags, then a
	// message, or a fragment of one if flagMore is set.
	kindMsg byte = 4
	// kindHeader (one-way, server to client): stream id, header metadata.
	kindHeader byte = 5
	// kindEnd (one-way, client to server): stream id; the client sends no
	// more messages (CloseSend).
	kindEnd byte = 6
	// kindDone (one-way, client to server): stream id; the client is done
	// with the stream and sends nothing more about it.
	kindDone byte = 7
	// kindWindow (one-way, either direction): stream id, bytes; the
	// receiver consumed that many bytes of messages on the stream.
	kindWindow byte = 8
)

// Flags.
const (
	// flagStreamedRequest (kindUnary): the request message is too large to
	// travel inline and follows as a kindMsg on the stream id.
	flagStreamedRequest byte = 1 << 0
	// flagStreamedResponse (kindResult): the response message travels as a
	// kindMsg on the stream id, sent before the result.
	flagStreamedResponse byte = 1 << 1
	// flagHasHeader (kindResult): the header metadata is present (it was
	// not sent separately).
	flagHasHeader byte = 1 << 2
	// flagMore (kindMsg): more fragments of the message follow.
	flagMore byte = 1 << 0
)

// streamWindow is the receive window of every stream direction: a sender
// starts a message only while less than this many bytes it sent on the
// stream are unconsumed by the receiver.
const streamWindow = 1 << 20

var errShortFrame = errors.New("truncated frame")

// encoder appends frame fields to a buffer.
type encoder struct{ b []byte }

func (e *encoder) byte(v byte)     { e.b = append(e.b, v) }
func (e *encoder) uint(v uint64)   { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) string(s string) { e.uint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) bytes(p []byte)  { e.uint(uint64(len(p))); e.b = append(e.b, p...) }

// metadata encodes md as a count of pairs, then key and value of each
// pair. Binary ("-bin") values travel as raw bytes.
func (e *encoder) metadata(md metadata.MD) {
	n := 0
	for _, vs := range md {
		n += len(vs)
	}
	e.uint(uint64(n))
	for k, vs := range md {
		for _, v := range vs {
			e.string(k)
			e.string(v)
		}
	}
}

func metadataSize(md metadata.MD) int {
	n := binary.MaxVarintLen64
	for k, vs := range md {
		for _, v := range vs {
			n += len(k) + len(v) + 2*binary.MaxVarintLen64
		}
	}
	return n
}

// decoder reads frame fields; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(errShortFrame)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errShortFrame)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail(errShortFrame)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

// maxMetadataPairs bounds the pairs of one metadata block.
const maxMetadataPairs = 1 << 16

func (d *decoder) metadata() metadata.MD {
	n := d.uint()
	if d.err != nil {
		return nil
	}
	if n > maxMetadataPairs || n > uint64(len(d.b)/2) {
		d.fail(fmt.Errorf("metadata of %d pairs", n))
		return nil
	}
	md := make(metadata.MD, n)
	for range n {
		k, v := d.string(), d.string()
		if d.err != nil {
			return nil
		}
		md[k] = append(md[k], v)
	}
	return md
}

// rest returns the remaining bytes.
func (d *decoder) rest() []byte {
	v := d.b
	d.b = nil
	return v
}

// callFrame is a decoded kindUnary or kindStream frame.
type callFrame struct {
	kind    byte
	flags   byte
	stream  uint64
	method  string
	subtype string
	md      metadata.MD
	msg     []byte
}

func appendCall(b []byte, f *callFrame) []byte {
	e := encoder{b: b}
	e.byte(f.kind)
	e.byte(f.flags)
	e.uint(f.stream)
	e.string(f.method)
	e.string(f.subtype)
	e.metadata(f.md)
	return e.b
}

func parseCall(p []byte) (*callFrame, error) {
	d := decoder{b: p}
	f := &callFrame{kind: d.byte(), flags: d.byte(), stream: d.uint(), method: d.string(), subtype: d.string(), md: d.metadata()}
	if f.kind == kindUnary {
		f.msg = d.rest()
	}
	if d.err != nil {
		return nil, fmt.Errorf("malformed call frame: %w", d.err)
	}
	return f, nil
}

// resultFrame is a decoded kindResult frame.
type resultFrame struct {
	flags   byte
	header  metadata.MD
	trailer metadata.MD
	status  []byte
	sent    uint64
	msg     []byte
}

func appendResult(b []byte, r *resultFrame) []byte {
	e := encoder{b: b}
	e.byte(kindResult)
	e.byte(r.flags)
	if r.flags&flagHasHeader != 0 {
		e.metadata(r.header)
	}
	e.metadata(r.trailer)
	e.bytes(r.status)
	e.uint(r.sent)
	return e.b
}

func parseResult(p []byte) (*resultFrame, error) {
	d := decoder{b: p}
	if k := d.byte(); k != kindResult && d.err == nil {
		return nil, fmt.Errorf("malformed result frame: kind %d", k)
	}
	r := &resultFrame{flags: d.byte()}
	if r.flags&flagHasHeader != 0 {
		r.header = d.metadata()
	}
	r.trailer = d.metadata()
	r.status = d.bytes()
	r.sent = d.uint()
	r.msg = d.rest()
	if d.err != nil {
		return nil, fmt.Errorf("malformed result frame: %w", d.err)
	}
	return r, nil
}

// oneWayFrame is a decoded one-way frame (kindMsg to kindWindow).
type oneWayFrame struct {
	kind   byte
	stream uint64
	flags  byte        // kindMsg
	data   []byte      // kindMsg
	md     metadata.MD // kindHeader
	n      uint64      // kindWindow
}

func parseOneWay(p []byte) (*oneWayFrame, error) {
	d := decoder{b: p}
	f := &oneWayFrame{kind: d.byte(), stream: d.uint()}
	switch f.kind {
	case kindMsg:
		f.flags = d.byte()
		f.data = d.rest()
	case kindHeader:
		f.md = d.metadata()
	case kindWindow:
		f.n = d.uint()
	case kindEnd, kindDone:
	default:
		if d.err == nil {
			return nil, fmt.Errorf("malformed one-way frame: kind %d", f.kind)
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("malformed one-way frame: %w", d.err)
	}
	return f, nil
}

// msgHeaderSize bounds the bytes before the data of a kindMsg frame.
const msgHeaderSize = 2 + binary.MaxVarintLen64

func appendMsgHeader(b []byte, stream uint64, flags byte) []byte {
	b = append(b, kindMsg)
	b = binary.AppendUvarint(b, stream)
	return append(b, flags)
}

func appendControl(b []byte, kind byte, stream uint64) []byte {
	b = append(b, kind)
	return binary.AppendUvarint(b, stream)
}
