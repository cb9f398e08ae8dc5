package alpcgrpc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// ClientConn is a native-mode client connection to a kalpc port served by a
// native Server. It implements grpc.ClientConnInterface, so generated
// stubs use it as they use a *grpc.ClientConn, with no HTTP/2 in between.
//
// It connects on first use (or Connect) and reconnects on the next call
// after the connection ends. A ClientConn is safe for concurrent use.
type ClientConn struct {
	path     string
	opts     dialOptions
	invoker  grpc.UnaryInvoker
	streamer grpc.Streamer

	dialMu   sync.Mutex // serialises connecting
	mu       sync.Mutex
	t        *clientTransport
	fallback *grpc.ClientConn
	closed   bool
}

var _ grpc.ClientConnInterface = (*ClientConn)(nil)

// errClientConnClosing is grpc-go's error for calls on a closed ClientConn.
var errClientConnClosing = status.Error(codes.Canceled, "grpc: the client connection is closing")

// NewClient returns a native-mode ClientConn for the kalpc port at path
// (a port name with WithBroker). It does not connect; the first call (or
// Connect) does.
func NewClient(path string, opts ...DialOption) (*ClientConn, error) {
	cc := &ClientConn{path: path}
	for _, o := range opts {
		o(&cc.opts)
	}
	if cc.opts.cfg != nil && cc.opts.cfg.Handler != nil {
		return nil, errors.New("alpcgrpc: alpc.Config.Handler must be nil: the connection is served by alpcgrpc")
	}
	cc.invoker = chainUnaryClient(cc.opts.unaryInts, cc.invoke)
	cc.streamer = chainStreamClient(cc.opts.streamInts, cc.newStream)
	return cc, nil
}

// Connect connects now if not yet connected. It returns an error wrapping
// ErrNoPort if no kalpc port listens at the path and no fallback is set.
func (cc *ClientConn) Connect(ctx context.Context) error {
	_, _, err := cc.transport(ctx)
	return err
}

// Fallback returns the fallback gRPC connection if the ClientConn fell
// back to it (see WithFallback), else nil.
func (cc *ClientConn) Fallback() *grpc.ClientConn {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.fallback
}

// Close closes the connection. Calls in progress fail with
// codes.Unavailable; later calls fail with codes.Canceled.
func (cc *ClientConn) Close() error {
	cc.dialMu.Lock()
	defer cc.dialMu.Unlock()
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return status.Error(codes.Canceled, "grpc: the client connection is closing")
	}
	cc.closed = true
	t, fb := cc.t, cc.fallback
	cc.t = nil
	cc.mu.Unlock()
	if fb != nil {
		return fb.Close()
	}
	if t != nil {
		_ = t.conn.Close()
	}
	return nil
}

// transport returns the live connection, connecting if needed, or the
// fallback.
func (cc *ClientConn) transport(ctx context.Context) (*clientTransport, *grpc.ClientConn, error) {
	if t, fb, err, ok := cc.current(); ok {
		return t, fb, err
	}
	cc.dialMu.Lock()
	defer cc.dialMu.Unlock()
	if t, fb, err, ok := cc.current(); ok {
		return t, fb, err
	}
	t := &clientTransport{streams: make(map[uint64]*clientStream)}
	cfg := alpc.Config{}
	if cc.opts.cfg != nil {
		cfg = *cc.opts.cfg
	}
	cfg.Handler = alpc.HandlerFunc(t.serveALPC)
	conn, err := connect(ctx, cc.opts.broker, cc.path, []byte(NativeMessage), &cfg)
	if err != nil {
		if !isNoPort(err) && (!cc.opts.hasFallback || !isUnsupported(err)) {
			return nil, nil, fmt.Errorf("alpcgrpc: %w", err)
		}
		if !cc.opts.hasFallback {
			return nil, nil, fmt.Errorf("%w %s: %w", ErrNoPort, cc.path, err)
		}
		fb, ferr := grpc.NewClient(cc.opts.fallback, cc.opts.fallbackOpts...)
		if ferr != nil {
			return nil, nil, fmt.Errorf("alpcgrpc: no kalpc port at %s, and the fallback failed: %w", cc.path, ferr)
		}
		cc.mu.Lock()
		cc.fallback = fb
		cc.mu.Unlock()
		return nil, fb, nil
	}
	t.conn = conn
	t.slots = make(chan struct{}, max(1, conn.Limits().MaxPendingCalls/2))
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closed {
		_ = conn.Close()
		return nil, nil, errClientConnClosing
	}
	cc.t = t
	return t, nil, nil
}

func (cc *ClientConn) current() (*clientTransport, *grpc.ClientConn, error, bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	switch {
	case cc.closed:
		return nil, nil, errClientConnClosing, true
	case cc.fallback != nil:
		return nil, cc.fallback, nil, true
	case cc.t != nil && cc.t.conn.Err() == nil:
		return cc.t, nil, nil, true
	}
	return nil, nil, nil, false
}

// transportStatus is transport's error as a gRPC status.
func (cc *ClientConn) transportStatus(ctx context.Context) (*clientTransport, *grpc.ClientConn, error) {
	t, fb, err := cc.transport(ctx)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, nil, err
		}
		if ctx.Err() != nil {
			return nil, nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, nil, status.Error(codes.Unavailable, err.Error())
	}
	return t, fb, nil
}

// clientTransport is one kalpc connection of a ClientConn.
type clientTransport struct {
	conn   *alpc.Conn
	nextID atomic.Uint64
	// slots bounds open streams to half the kalpc window, so one-way
	// messages always find room next to the streams' long-lived calls.
	slots chan struct{}

	mu      sync.Mutex
	streams map[uint64]*clientStream
}

// serveALPC handles the server's one-way messages. It never blocks.
func (t *clientTransport) serveALPC(_ context.Context, req *alpc.Request) ([]byte, error) {
	if !req.OneWay() {
		return nil, alpc.Errorf(alpc.CodeUnimplemented, "alpcgrpc: a native client serves no calls")
	}
	f, err := parseOneWay(req.Payload())
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	cs := t.streams[f.stream]
	t.mu.Unlock()
	if cs != nil && (f.kind == kindMsg || f.kind == kindHeader || f.kind == kindWindow) {
		cs.s.receive(f)
	}
	return nil, nil
}

func (t *clientTransport) register(cs *clientStream) {
	t.mu.Lock()
	t.streams[cs.s.id] = cs
	t.mu.Unlock()
}

func (t *clientTransport) unregister(id uint64) {
	t.mu.Lock()
	delete(t.streams, id)
	t.mu.Unlock()
}

// callInfo is what a call's options ask for.
type callInfo struct {
	codec    encoding.CodecV2
	subtype  string
	maxRecv  int
	maxSend  int
	header   []*metadata.MD
	trailer  []*metadata.MD
	peer     []*peer.Peer
	onFinish []func(error)
}

func (cc *ClientConn) callInfo(opts []grpc.CallOption) (*callInfo, error) {
	ci := &callInfo{maxRecv: DefaultMaxRecvMsgSize, maxSend: DefaultMaxSendMsgSize}
	for _, list := range [][]grpc.CallOption{cc.opts.callOpts, opts} {
		for _, o := range list {
			switch o := o.(type) {
			case grpc.HeaderCallOption:
				ci.header = append(ci.header, o.HeaderAddr)
			case grpc.TrailerCallOption:
				ci.trailer = append(ci.trailer, o.TrailerAddr)
			case grpc.PeerCallOption:
				ci.peer = append(ci.peer, o.PeerAddr)
			case grpc.MaxRecvMsgSizeCallOption:
				ci.maxRecv = o.MaxRecvMsgSize
			case grpc.MaxSendMsgSizeCallOption:
				ci.maxSend = o.MaxSendMsgSize
			case grpc.ContentSubtypeCallOption:
				ci.subtype = o.ContentSubtype
			case grpc.ForceCodecV2CallOption:
				ci.codec = o.CodecV2
			case grpc.OnFinishCallOption:
				ci.onFinish = append(ci.onFinish, o.OnFinish)
			}
		}
	}
	if ci.codec == nil {
		c, err := codecFor(ci.subtype)
		if err != nil {
			return nil, err
		}
		ci.codec = c
	} else if ci.subtype == "" {
		ci.subtype = ci.codec.Name()
	}
	return ci, nil
}

func (ci *callInfo) finish(path string, header, trailer metadata.MD, err error) {
	for _, h := range ci.header {
		*h = header
	}
	for _, t := range ci.trailer {
		*t = trailer
	}
	for _, p := range ci.peer {
		*p = peer.Peer{Addr: Addr(path), LocalAddr: Addr("")}
	}
	for _, f := range ci.onFinish {
		f(err)
	}
}

// Invoke performs a unary call: one kalpc call carrying the method, the
// metadata and the request, answered by the response, the header and
// trailer metadata, and the status.
func (cc *ClientConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return cc.invoker(ctx, method, args, reply, nil, opts...)
}

func (cc *ClientConn) invoke(ctx context.Context, method string, args, reply any, _ *grpc.ClientConn, opts ...grpc.CallOption) error {
	t, fb, err := cc.transportStatus(ctx)
	if err != nil {
		return err
	}
	if fb != nil {
		return fb.Invoke(ctx, method, args, reply, opts...)
	}
	ci, err := cc.callInfo(opts)
	if err != nil {
		return err
	}
	header, trailer, err := cc.unary(ctx, t, ci, method, args, reply)
	ci.finish(cc.path, header, trailer, err)
	return err
}

func (cc *ClientConn) unary(ctx context.Context, t *clientTransport, ci *callInfo, method string, args, reply any) (header, trailer metadata.MD, err error) {
	md, _ := metadata.FromOutgoingContext(ctx)
	f := callFrame{kind: kindUnary, stream: t.nextID.Add(1), method: method, subtype: ci.subtype, md: md}
	b := appendCall(make([]byte, 0, 64+len(method)+len(ci.subtype)+metadataSize(md)), &f)
	hdrLen := len(b)
	var l *alpc.Loan
	if m, size, ok := inPlace(ci.codec, args); ok && hdrLen+size > t.conn.Limits().InlineLimit {
		if l, err = loanMessage(ctx, t.conn, b, m, size, ci.maxSend); err != nil {
			return nil, nil, err
		}
	}
	if l == nil {
		if b, err = appendMarshal(ci.codec, b, args, ci.maxSend); err != nil {
			return nil, nil, err
		}
	}

	// The response may come back on the stream id if it is too large to
	// travel inline.
	cs := &clientStream{s: newStream(f.stream, t.conn, ci.maxRecv), t: t}
	t.register(cs)
	defer t.unregister(f.stream)

	streamed := l == nil && len(b) > t.conn.Limits().InlineLimit && !largeMessages
	if streamed {
		b[1] |= flagStreamedRequest
		frame := make([]byte, msgHeaderSize+len(b)-hdrLen)
		copy(frame[msgHeaderSize:], b[hdrLen:])
		b = b[:hdrLen]
		if err := sendFragmented(ctx, t.conn, f.stream, frame, msgHeaderSize); err != nil {
			return nil, nil, toStatus(err)
		}
		defer func() {
			_ = t.conn.Send(context.Background(), appendControl(nil, kindDone, f.stream))
		}()
	}
	// A large message is encoded straight into shared memory; the reply is
	// read in place (a View) and decoded before the View is released.
	var v *alpc.View
	if l != nil {
		v, err = t.conn.CallLoanView(ctx, l)
	} else {
		v, err = t.conn.CallView(ctx, b)
	}
	if err != nil {
		return nil, nil, toStatus(err)
	}
	defer v.Release()
	r, err := parseResult(v.Bytes())
	if err != nil {
		return nil, nil, malformed(err)
	}
	if err := statusError(r.status); err != nil {
		return r.header, r.trailer, err
	}
	msg := r.msg
	if r.flags&flagStreamedResponse != 0 {
		cs.s.mu.Lock()
		for len(cs.s.msgs) == 0 && cs.s.recvErr == nil && ctx.Err() == nil && t.conn.Err() == nil {
			cs.s.wait(ctx)
		}
		switch {
		case len(cs.s.msgs) > 0:
			msg = cs.s.msgs[0]
		case cs.s.recvErr != nil:
			err = cs.s.recvErr
		case ctx.Err() != nil:
			err = status.FromContextError(ctx.Err()).Err()
		default:
			err = toStatus(t.conn.Err())
		}
		cs.s.mu.Unlock()
		if err != nil {
			return r.header, r.trailer, err
		}
	}
	if err := unmarshal(ci.codec, msg, reply, ci.maxRecv, "response"); err != nil {
		return r.header, r.trailer, err
	}
	return r.header, r.trailer, nil
}

// statusError decodes a result's status: empty means OK.
func statusError(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	var p spb.Status
	if err := proto.Unmarshal(b, &p); err != nil {
		return status.Errorf(codes.Internal, "alpcgrpc: malformed status: %v", err)
	}
	if p.Code == int32(codes.OK) {
		return status.Error(codes.Internal, "alpcgrpc: server sent an OK status with a message")
	}
	return status.FromProto(&p).Err()
}
