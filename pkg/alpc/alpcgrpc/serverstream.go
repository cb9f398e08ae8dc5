package alpcgrpc

import (
	"context"
	"errors"
	"io"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// serverStream is the server's end of a native stream, as its handler sees
// it.
type serverStream struct {
	e     *stream
	srv   *Server
	ctx   context.Context
	codec encoding.CodecV2
	sts   serverTransportStream
	// sent counts the header and message frames sent, so the client can
	// tell when it has them all.
	sent atomic.Uint64
}

var _ grpc.ServerStream = (*serverStream)(nil)

func (ss *serverStream) Context() context.Context        { return ss.ctx }
func (ss *serverStream) SetHeader(md metadata.MD) error  { return ss.sts.SetHeader(md) }
func (ss *serverStream) SendHeader(md metadata.MD) error { return ss.sts.SendHeader(md) }
func (ss *serverStream) SetTrailer(md metadata.MD)       { _ = ss.sts.SetTrailer(md) }

// sendHeader sends the header frame.
func (ss *serverStream) sendHeader(md metadata.MD) error {
	e := encoder{b: appendControl(make([]byte, 0, 16+metadataSize(md)), kindHeader, ss.e.id)}
	e.metadata(md)
	if err := ss.e.conn.Send(ss.ctx, e.b); err != nil {
		return toStatus(err)
	}
	ss.sent.Add(1)
	return nil
}

// SendMsg sends m, first the header if it has not gone yet.
func (ss *serverStream) SendMsg(m any) error {
	if !ss.sts.wasSent() {
		if err := ss.sts.SendHeader(nil); err != nil && !errors.Is(err, errHeaderSent) {
			return err
		}
	}
	frame, err := marshal(ss.codec, m, msgHeaderSize, ss.srv.opts.maxSend)
	if err != nil {
		return err
	}
	if err := ss.e.sendMsg(ss.ctx, frame, msgHeaderSize, nil); err != nil {
		return toStatus(err)
	}
	ss.sent.Add(1)
	return nil
}

// RecvMsg receives the client's next message into m; io.EOF after the
// client's CloseSend.
func (ss *serverStream) RecvMsg(m any) error {
	e := ss.e
	e.mu.Lock()
	for {
		switch {
		case len(e.msgs) > 0:
			msg := e.msgs[0]
			e.msgs[0] = nil
			e.msgs = e.msgs[1:]
			e.consumedLocked(len(msg))
			e.mu.Unlock()
			return unmarshal(ss.codec, msg, m, ss.srv.opts.maxRecv, "message")
		case e.recvErr != nil:
			e.mu.Unlock()
			return e.recvErr
		case e.ended:
			e.mu.Unlock()
			return io.EOF
		case ss.ctx.Err() != nil:
			e.mu.Unlock()
			return status.FromContextError(ss.ctx.Err()).Err()
		case e.done:
			e.mu.Unlock()
			return status.Error(codes.Canceled, "the client ended the stream")
		case e.conn.Err() != nil:
			err := e.conn.Err()
			e.mu.Unlock()
			return toStatus(err)
		}
		e.wait(ss.ctx)
	}
}
