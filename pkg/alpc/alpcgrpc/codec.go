package alpcgrpc

import (
	"context"
	"fmt"
	"math"
	"reflect"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// Message size defaults, as grpc-go's.
const (
	// DefaultMaxRecvMsgSize is the largest message received by default.
	DefaultMaxRecvMsgSize = 4 << 20
	// DefaultMaxSendMsgSize is the largest message sent by default.
	DefaultMaxSendMsgSize = math.MaxInt32
)

// codecFor returns the codec for a content-subtype ("" means proto).
func codecFor(subtype string) (encoding.CodecV2, error) {
	if subtype == "" {
		subtype = "proto"
	}
	c := encoding.GetCodecV2(subtype)
	if c == nil {
		return nil, status.Errorf(codes.Internal, "no codec registered for content-subtype %s", subtype)
	}
	return c, nil
}

// marshal encodes v into a new buffer after headroom free bytes. A nil v
// encodes as an empty message, as in grpc-go.
func marshal(c encoding.CodecV2, v any, headroom, maxSend int) ([]byte, error) {
	if v == nil {
		return make([]byte, headroom), nil
	}
	bs, err := c.Marshal(v)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err)
	}
	defer bs.Free()
	n := bs.Len()
	if n > maxSend {
		return nil, status.Errorf(codes.ResourceExhausted, "grpc: trying to send message larger than max (%d vs. %d)", n, maxSend)
	}
	buf := make([]byte, headroom+n)
	bs.CopyTo(buf[headroom:])
	return buf, nil
}

// appendMarshal encodes v after b.
func appendMarshal(c encoding.CodecV2, b []byte, v any, maxSend int) ([]byte, error) {
	if v == nil {
		return b, nil
	}
	bs, err := c.Marshal(v)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err)
	}
	defer bs.Free()
	n := bs.Len()
	if n > maxSend {
		return nil, status.Errorf(codes.ResourceExhausted, "grpc: trying to send message larger than max (%d vs. %d)", n, maxSend)
	}
	b = append(b, make([]byte, n)...)
	bs.CopyTo(b[len(b)-n:])
	return b, nil
}

// unmarshal decodes data into v. side names the message in errors.
func unmarshal(c encoding.CodecV2, data []byte, v any, maxRecv int, side string) error {
	if len(data) > maxRecv {
		return status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", len(data), maxRecv)
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, v); err != nil {
		return status.Errorf(codes.Internal, "grpc: failed to unmarshal the received %s: %v", side, err)
	}
	return nil
}

func malformed(err error) error {
	return status.Error(codes.Internal, fmt.Sprintf("alpcgrpc: %v", err))
}

// grpcProtoCodec is the package of grpc-go's own "proto" codec. Messages
// for it can be sized first and then encoded straight into shared memory;
// any other codec (including a replacement registered as "proto") is used
// through its Marshal.
const grpcProtoCodec = "google.golang.org/grpc/encoding/proto"

// inPlace returns v as a message that can be encoded in place with codec c,
// and its encoded size.
func inPlace(c encoding.CodecV2, v any) (proto.Message, int, bool) {
	m, ok := v.(proto.Message)
	if !ok || m == nil {
		return nil, 0, false
	}
	t := reflect.TypeOf(c)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.PkgPath() != grpcProtoCodec {
		return nil, 0, false
	}
	return m, proto.Size(m), true
}

// loanMessage encodes header followed by m (size bytes, from inPlace)
// directly into a loan of conn's shared memory: one pass over the message
// instead of encoding, copying into a frame, and copying into a section.
// It returns nil, nil when no loan can be had right now (the caller then
// sends a copy, which reports any real error).
func loanMessage(ctx context.Context, conn *alpc.Conn, header []byte, m proto.Message, size, maxSend int) (*alpc.Loan, error) {
	if size > maxSend {
		return nil, status.Errorf(codes.ResourceExhausted, "grpc: trying to send message larger than max (%d vs. %d)", size, maxSend)
	}
	l, err := conn.Loan(ctx, len(header)+size)
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, nil
	}
	buf := l.Bytes()
	copy(buf, header)
	dst := buf[len(header):]
	out, err := proto.MarshalOptions{}.MarshalAppend(dst[:0], m)
	if err == nil && (len(out) != len(dst) || (len(out) > 0 && &out[0] != &dst[0])) {
		err = fmt.Errorf("the message changed size while being encoded (%d, then %d bytes)", len(dst), len(out))
	}
	if err != nil {
		l.Release()
		return nil, status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err)
	}
	return l, nil
}
