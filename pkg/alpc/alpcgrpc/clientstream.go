package alpcgrpc

import (
	"context"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// clientStream is the client's end of a native stream. The stream is a
// kalpc call that lasts as long as the server's handler: its reply is the
// stream's result (status, trailer). Messages travel beside it as ordered
// one-way messages tagged with the stream id.
type clientStream struct {
	s      *stream
	t      *clientTransport
	ctx    context.Context
	cancel context.CancelFunc
	desc   *grpc.StreamDesc
	ci     *callInfo
	path   string

	// Under s.mu:
	err        error       // the final status (nil: OK), once finished
	trailer    metadata.MD // once finished
	sentFrames uint64      // header and message frames the server sent
	closedSend bool

	// smu orders what the client sends about the stream: nothing follows
	// kindDone.
	smu      sync.Mutex
	doneSent bool

	finishOnce sync.Once
}

var _ grpc.ClientStream = (*clientStream)(nil)

// NewStream opens a stream: a kalpc call carrying the method and metadata,
// which lasts as long as the server's handler.
func (cc *ClientConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return cc.streamer(ctx, desc, nil, method, opts...)
}

func (cc *ClientConn) newStream(ctx context.Context, desc *grpc.StreamDesc, _ *grpc.ClientConn, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	t, fb, err := cc.transportStatus(ctx)
	if err != nil {
		return nil, err
	}
	if fb != nil {
		return fb.NewStream(ctx, desc, method, opts...)
	}
	ci, err := cc.callInfo(opts)
	if err != nil {
		return nil, err
	}
	select {
	case t.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-t.conn.Done():
		return nil, toStatus(t.conn.Err())
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	id := t.nextID.Add(1)
	open := appendCall(nil, &callFrame{kind: kindStream, stream: id, method: method, subtype: ci.subtype, md: md})
	cs := &clientStream{s: newStream(id, t.conn, ci.maxRecv), t: t, desc: desc, ci: ci, path: cc.path}
	cs.ctx, cs.cancel = context.WithCancel(ctx)
	t.register(cs)
	go cs.run(open)
	return cs, nil
}

// run makes the stream's call and records its result.
func (cs *clientStream) run(open []byte) {
	resp, err := cs.t.conn.Call(cs.ctx, open)
	var (
		header, trailer metadata.MD
		gotHeader       bool
		sent            uint64
	)
	if err != nil {
		err = toStatus(err)
	} else if r, perr := parseResult(resp); perr != nil {
		err = malformed(perr)
	} else {
		header, gotHeader, trailer, sent = r.header, r.flags&flagHasHeader != 0, r.trailer, r.sent
		err = statusError(r.status)
	}
	s := cs.s
	s.mu.Lock()
	if gotHeader && !s.gotHdr {
		s.header, s.gotHdr = header, true
		s.frames++
		sent++
	}
	cs.err, cs.trailer, cs.sentFrames = err, trailer, sent
	s.finished = true
	s.broadcastLocked()
	s.mu.Unlock()

	// Nothing more is sent about the stream after kindDone.
	cs.smu.Lock()
	cs.doneSent = true
	_ = cs.t.conn.Send(context.Background(), appendControl(nil, kindDone, s.id))
	cs.smu.Unlock()
	<-cs.t.slots
}

// complete reports whether the stream's result and every frame before it
// have arrived. s.mu must be held.
func (cs *clientStream) completeLocked() bool {
	return cs.s.finished && (cs.err != nil || cs.s.frames >= cs.sentFrames || cs.s.recvErr != nil)
}

// finish ends the stream for the user: its context is cancelled, and the
// stream is forgotten, so the server's late messages are dropped.
func (cs *clientStream) finish(err error) {
	cs.finishOnce.Do(func() {
		cs.cancel()
		cs.t.unregister(cs.s.id)
		cs.ci.finish(cs.path, cs.s.header, cs.trailer, err)
	})
}

// Header returns the server's header metadata, waiting for it if needed.
func (cs *clientStream) Header() (metadata.MD, error) {
	s := cs.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.gotHdr && !cs.completeLocked() {
		s.wait(cs.ctx)
		if cs.ctx.Err() != nil && !s.gotHdr && !s.finished {
			return nil, status.FromContextError(cs.ctx.Err()).Err()
		}
	}
	if s.gotHdr {
		return s.header, nil
	}
	if st, ok := status.FromError(cs.err); ok && cs.err != nil && st.Code() != codes.Unknown {
		return nil, nil
	}
	return nil, cs.err
}

// Trailer returns the trailer metadata; it is complete once RecvMsg has
// returned an error.
func (cs *clientStream) Trailer() metadata.MD {
	cs.s.mu.Lock()
	defer cs.s.mu.Unlock()
	return cs.trailer
}

// CloseSend tells the server the client sends no more messages.
func (cs *clientStream) CloseSend() error {
	cs.s.mu.Lock()
	if cs.closedSend {
		cs.s.mu.Unlock()
		return nil
	}
	cs.closedSend = true
	cs.s.mu.Unlock()
	cs.smu.Lock()
	defer cs.smu.Unlock()
	if !cs.doneSent {
		_ = cs.t.conn.Send(cs.ctx, appendControl(nil, kindEnd, cs.s.id))
	}
	return nil
}

// Context returns the stream's context.
func (cs *clientStream) Context() context.Context { return cs.ctx }

// SendMsg sends m. It returns io.EOF if the stream has ended; RecvMsg then
// returns its status.
func (cs *clientStream) SendMsg(m any) error {
	cs.s.mu.Lock()
	closed, finished := cs.closedSend, cs.s.finished
	cs.s.mu.Unlock()
	if closed {
		return status.Error(codes.Internal, "SendMsg called after CloseSend")
	}
	if finished {
		return io.EOF
	}
	frame, err := marshal(cs.ci.codec, m, msgHeaderSize, cs.ci.maxSend)
	if err != nil {
		return err
	}
	stopped := func() bool { return cs.s.finished }
	// The window wait happens outside smu; sending inside it.
	err = cs.s.sendMsgOrdered(cs.ctx, frame, msgHeaderSize, stopped, &cs.smu, &cs.doneSent)
	if err != nil {
		return io.EOF
	}
	return nil
}

// RecvMsg receives the next message into m. It returns io.EOF when the
// server's handler returned OK and every message was received, or the
// stream's status as an error.
func (cs *clientStream) RecvMsg(m any) error {
	s := cs.s
	s.mu.Lock()
	if !cs.desc.ServerStreams {
		// One response: it counts only with an OK status.
		for !cs.completeLocked() {
			s.wait(context.Background())
		}
		err := cs.recvResultLocked()
		if err == nil {
			if len(s.msgs) == 0 {
				err = status.Error(codes.Internal, "cardinality violation: expected <EOF> for non server-streaming RPCs, but received no message")
			} else {
				msg := s.msgs[0]
				s.msgs = nil
				err = unmarshal(cs.ci.codec, msg, m, cs.ci.maxRecv, "message")
			}
		}
		s.mu.Unlock()
		cs.finish(err)
		return err
	}
	for {
		if len(s.msgs) > 0 && (!s.finished || cs.err == nil || cs.sentFrames > 0) {
			msg := s.msgs[0]
			s.msgs[0] = nil
			s.msgs = s.msgs[1:]
			if !s.finished {
				cs.s.consumedOrdered(len(msg), &cs.smu, &cs.doneSent)
			}
			s.mu.Unlock()
			if err := unmarshal(cs.ci.codec, msg, m, cs.ci.maxRecv, "message"); err != nil {
				cs.cancel()
				cs.finish(err)
				return err
			}
			return nil
		}
		if s.recvErr != nil || cs.completeLocked() {
			err := cs.recvResultLocked()
			s.mu.Unlock()
			cs.finish(err)
			if err == nil {
				return io.EOF
			}
			return err
		}
		s.wait(context.Background())
	}
}

// recvResultLocked is the stream's final outcome. s.mu must be held.
func (cs *clientStream) recvResultLocked() error {
	if cs.s.recvErr != nil {
		return cs.s.recvErr
	}
	return cs.err
}
