package alpcgrpc

import (
	"fmt"
	"math"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
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
