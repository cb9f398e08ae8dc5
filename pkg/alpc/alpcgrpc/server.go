package alpcgrpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// Server is a native-mode gRPC server. It implements
// grpc.ServiceRegistrar, so generated code registers services on it as on
// a *grpc.Server, and alpc.Handler: it serves the kalpc connections whose
// Config.Handler it is: Serve takes a port made by Listen (a socket path)
// or Publish (in a pod with the kalpc sidecar); alpc.FileConn serves
// channels handed over some other way.
type Server struct {
	opts      serverOptions
	unaryInt  grpc.UnaryServerInterceptor
	streamInt grpc.StreamServerInterceptor
	log       *slog.Logger

	handlers sync.WaitGroup

	mu        sync.Mutex
	services  map[string]*service
	listeners map[*alpc.Acceptor]struct{}
	conns     map[*alpc.Conn]*serverTransport
	stopped   bool
}

var (
	_ grpc.ServiceRegistrar = (*Server)(nil)
	_ alpc.Handler          = (*Server)(nil)
)

type service struct {
	impl     any
	methods  map[string]*grpc.MethodDesc
	streams  map[string]*grpc.StreamDesc
	metadata any
}

// NewServer returns a native Server with no services registered.
func NewServer(opts ...ServerOption) *Server {
	s := &Server{
		opts:      serverOptions{maxRecv: DefaultMaxRecvMsgSize, maxSend: DefaultMaxSendMsgSize},
		log:       slog.Default().With("component", "alpcgrpc"),
		services:  make(map[string]*service),
		listeners: make(map[*alpc.Acceptor]struct{}),
		conns:     make(map[*alpc.Conn]*serverTransport),
	}
	for _, o := range opts {
		o(&s.opts)
	}
	s.unaryInt = chainUnaryServer(s.opts.unaryInts)
	s.streamInt = chainStreamServer(s.opts.streamInts)
	return s
}

// RegisterService registers a service and its implementation. Like
// grpc.Server's, it panics if impl does not implement sd.HandlerType or the
// service is registered twice, and must be called before serving.
func (s *Server) RegisterService(sd *grpc.ServiceDesc, impl any) {
	if impl != nil {
		ht := reflect.TypeOf(sd.HandlerType).Elem()
		if st := reflect.TypeOf(impl); !st.Implements(ht) {
			panic(fmt.Sprintf("alpcgrpc: RegisterService found the handler of type %v that does not satisfy %v", st, ht))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.services[sd.ServiceName]; dup {
		panic(fmt.Sprintf("alpcgrpc: RegisterService found duplicate service registration for %q", sd.ServiceName))
	}
	svc := &service{impl: impl, methods: make(map[string]*grpc.MethodDesc), streams: make(map[string]*grpc.StreamDesc), metadata: sd.Metadata}
	for i := range sd.Methods {
		svc.methods[sd.Methods[i].MethodName] = &sd.Methods[i]
	}
	for i := range sd.Streams {
		svc.streams[sd.Streams[i].StreamName] = &sd.Streams[i]
	}
	s.services[sd.ServiceName] = svc
}

// GetServiceInfo returns the registered services, as grpc.Server's does
// (it lets the reflection service run on a native Server).
func (s *Server) GetServiceInfo() map[string]grpc.ServiceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]grpc.ServiceInfo, len(s.services))
	for name, svc := range s.services {
		var ms []grpc.MethodInfo
		for n := range svc.methods {
			ms = append(ms, grpc.MethodInfo{Name: n})
		}
		for n, d := range svc.streams {
			ms = append(ms, grpc.MethodInfo{Name: n, IsClientStream: d.ClientStreams, IsServerStream: d.ServerStreams})
		}
		out[name] = grpc.ServiceInfo{Methods: ms, Metadata: svc.metadata}
	}
	return out
}

// Listen publishes a kalpc port at path whose connections this server
// serves; pass it to Serve. cfg is as in alpc.Listen, with a nil Handler.
// Unless set, MaxConcurrentHandlers defaults to MaxPendingCalls, so unary
// calls never queue behind long-lived streams.
func (s *Server) Listen(path string, cfg *alpc.Config) (*alpc.Listener, error) {
	c, err := s.config(cfg)
	if err != nil {
		return nil, fmt.Errorf("alpcgrpc: listen %s: %w", path, err)
	}
	l, err := alpc.Listen(path, &c)
	if err != nil {
		return nil, fmt.Errorf("alpcgrpc: %w", err)
	}
	return l, nil
}

// Publish publishes the connection port name in the pod's namespace
// through the pod's kalpc broker, whose connections this server serves;
// pass it to Serve. It is the brokered counterpart of Listen; cfg is as
// there. ctx bounds only the publication.
func (s *Server) Publish(ctx context.Context, name string, cfg *alpc.Config) (*alpc.Port, error) {
	c, err := s.config(cfg)
	if err != nil {
		return nil, fmt.Errorf("alpcgrpc: publish %s: %w", name, err)
	}
	p, err := alpc.Publish(ctx, name, &c)
	if err != nil {
		return nil, fmt.Errorf("alpcgrpc: %w", err)
	}
	return p, nil
}

// config is cfg for a port whose connections s serves.
func (s *Server) config(cfg *alpc.Config) (alpc.Config, error) {
	var c alpc.Config
	if cfg != nil {
		c = *cfg
	}
	if c.Handler != nil {
		return c, errors.New("alpc.Config.Handler must be nil: the connections are served by alpcgrpc")
	}
	c.Handler = s
	if c.MaxConcurrentHandlers == 0 {
		c.MaxConcurrentHandlers = c.MaxPendingCalls
		if c.MaxConcurrentHandlers == 0 {
			c.MaxConcurrentHandlers = alpc.DefaultMaxPendingCalls
		}
	}
	return c, nil
}

// Serve accepts native-mode clients on a until a is closed or the server
// stops, and rejects clients that ask for another mode. a is either kind
// of kalpc port, made by Listen (a socket path) or Publish (through the
// pod's kalpc broker), or by alpc.Listen or alpc.Publish with a Config
// whose Handler is s. Serve returns nil after Stop or GracefulStop, else
// the error that ended accepting.
func (s *Server) Serve(a alpc.Acceptor) error {
	key := &a
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		_ = a.Close()
		return nil
	}
	s.listeners[key] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, key)
		s.mu.Unlock()
	}()
	for {
		req, err := a.Accept(context.Background())
		if err != nil {
			s.mu.Lock()
			stopped := s.stopped
			s.mu.Unlock()
			if stopped {
				return nil
			}
			return fmt.Errorf("alpcgrpc: accept: %w", err)
		}
		if msg := string(req.Message); msg != NativeMessage {
			_ = req.Reject(rejectReason(msg, NativeMessage))
			continue
		}
		conn, err := req.Accept(nil)
		if err != nil {
			continue
		}
		s.transportFor(conn)
	}
}

// Stop closes every listener and connection at once: running handlers'
// contexts are cancelled and clients' calls fail with codes.Unavailable.
func (s *Server) Stop() {
	for _, c := range s.stop() {
		_ = c.Close()
	}
	s.handlers.Wait()
}

// GracefulStop closes every listener, waits for running handlers to
// finish, then closes the connections.
func (s *Server) GracefulStop() {
	conns := s.stop()
	s.handlers.Wait()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (s *Server) stop() []*alpc.Conn {
	s.mu.Lock()
	s.stopped = true
	ls := s.listeners
	s.listeners = make(map[*alpc.Acceptor]struct{})
	var conns []*alpc.Conn
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for a := range ls {
		_ = (*a).Close()
	}
	return conns
}

// transportFor returns the state of conn, creating it on the connection's
// first request.
func (s *Server) transportFor(conn *alpc.Conn) *serverTransport {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.conns[conn]; ok {
		return st
	}
	st := &serverTransport{conn: conn, srv: s, streams: make(map[uint64]*stream), peer: peerAddr(conn.PeerCredentials())}
	s.conns[conn] = st
	go func() {
		<-conn.Done()
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()
	return st
}

// ServeALPC serves one request of a native-mode connection.
func (s *Server) ServeALPC(ctx context.Context, req *alpc.Request) ([]byte, error) {
	st := s.transportFor(req.Conn())
	if req.OneWay() {
		f, err := parseOneWay(req.Payload())
		if err != nil {
			s.log.Warn("dropping malformed message", "error", err)
			return nil, nil
		}
		st.dispatch(f)
		return nil, nil
	}
	s.handlers.Add(1)
	defer s.handlers.Done()
	// The call is read in place: a unary request is decoded straight from
	// the client's shared memory, which is given back when the call ends
	// (codecs copy what they keep, as grpc-go requires of them; a peer
	// changing the bytes meanwhile can only make them decode to another
	// message it could have sent). Everything else parseCall returns is
	// copied.
	v := req.View()
	defer v.Release()
	f, err := parseCall(v.Bytes())
	if err != nil {
		return nil, alpc.Errorf(alpc.CodeInvalidArgument, "alpcgrpc: %v", err)
	}
	switch f.kind {
	case kindUnary:
		return s.handleUnary(ctx, st, f, req), nil
	case kindStream:
		return s.handleStream(ctx, st, f), nil
	}
	return nil, alpc.Errorf(alpc.CodeInvalidArgument, "alpcgrpc: unexpected call kind %d", f.kind)
}

// lookup finds a method. The error is grpc-go's for unknown services and
// methods.
func (s *Server) lookup(method string) (*service, *grpc.MethodDesc, *grpc.StreamDesc, error) {
	name := strings.TrimPrefix(method, "/")
	i := strings.LastIndex(name, "/")
	if i < 0 {
		return nil, nil, nil, status.Errorf(codes.Unimplemented, "malformed method name: %q", method)
	}
	svcName, mName := name[:i], name[i+1:]
	s.mu.Lock()
	svc := s.services[svcName]
	s.mu.Unlock()
	if svc == nil {
		return nil, nil, nil, status.Errorf(codes.Unimplemented, "unknown service %v", svcName)
	}
	if md := svc.methods[mName]; md != nil {
		return svc, md, nil, nil
	}
	if sd := svc.streams[mName]; sd != nil {
		return svc, nil, sd, nil
	}
	return nil, nil, nil, status.Errorf(codes.Unimplemented, "unknown method %v for service %v", mName, svcName)
}

// newContext is the handler's context: the kalpc request's (with the
// caller's deadline and cancellation), plus metadata, peer and the
// transport stream grpc.SetHeader and friends use.
func (st *serverTransport) newContext(ctx context.Context, f *callFrame, sts grpc.ServerTransportStream) context.Context {
	ctx = metadata.NewIncomingContext(ctx, f.md)
	ctx = peer.NewContext(ctx, &peer.Peer{Addr: st.peer, LocalAddr: Addr("")})
	return grpc.NewContextWithServerTransportStream(ctx, sts)
}

func (s *Server) handleUnary(ctx context.Context, st *serverTransport, f *callFrame, req *alpc.Request) []byte {
	sts := &serverTransportStream{method: f.method}
	var r resultFrame
	msg, err := f.msg, error(nil)
	if f.flags&flagStreamedRequest != 0 {
		e := st.attach(f.stream, s.opts.maxRecv)
		msg, err = e.recvOne(ctx)
		st.detach(e)
	}
	var resp any
	if err == nil {
		resp, err = s.runUnary(st.newContext(ctx, f, sts), f, msg)
	}
	header, trailer := sts.finish()
	r.flags, r.header, r.trailer = flagHasHeader, header, trailer
	if err != nil {
		r.status = encodeStatus(err)
		return appendResult(nil, &r)
	}
	codec, _ := codecFor(f.subtype)
	b := appendResult(make([]byte, 0, 64+metadataSize(header)+metadataSize(trailer)), &r)
	hdrLen := len(b)
	// A large response is encoded straight into shared memory and sent as
	// the reply without a copy.
	if m, size, ok := inPlace(codec, resp); ok && hdrLen+size > st.conn.Limits().InlineLimit {
		l, err := loanMessage(ctx, st.conn, b, m, size, s.opts.maxSend)
		if err == nil && l != nil {
			if err = req.ReplyLoan(l); err != nil {
				l.Release()
			}
		}
		if err != nil {
			r.status = encodeStatus(err)
			return appendResult(nil, &r)
		}
		if l != nil {
			return nil
		}
	}
	if b, err = appendMarshal(codec, b, resp, s.opts.maxSend); err != nil {
		r.status = encodeStatus(err)
		return appendResult(nil, &r)
	}
	if len(b) <= st.conn.Limits().InlineLimit || largeMessages {
		return b
	}
	// TODO(sections): once kalpc replies carry large payloads, return b.
	frame := make([]byte, msgHeaderSize+len(b)-hdrLen)
	copy(frame[msgHeaderSize:], b[hdrLen:])
	if err := sendFragmented(ctx, st.conn, f.stream, frame, msgHeaderSize); err != nil {
		r.status = encodeStatus(toStatus(err))
		return appendResult(nil, &r)
	}
	r.flags |= flagStreamedResponse
	r.sent = 1
	return appendResult(nil, &r)
}

// runUnary runs a unary method on msg.
func (s *Server) runUnary(ctx context.Context, f *callFrame, msg []byte) (any, error) {
	svc, md, _, err := s.lookup(f.method)
	if err != nil {
		return nil, err
	}
	if md == nil {
		return nil, status.Errorf(codes.Internal, "method %s is a stream, called as unary", f.method)
	}
	codec, err := codecFor(f.subtype)
	if err != nil {
		return nil, err
	}
	dec := func(m any) error { return unmarshal(codec, msg, m, s.opts.maxRecv, "request") }
	return md.Handler(svc.impl, ctx, dec, s.unaryInt)
}

func (s *Server) handleStream(ctx context.Context, st *serverTransport, f *callFrame) []byte {
	e := st.attach(f.stream, s.opts.maxRecv)
	defer st.detach(e)
	ss := &serverStream{e: e, srv: s}
	ss.sts.method = f.method
	ss.sts.sendHeader = ss.sendHeader
	ss.ctx = st.newContext(ctx, f, &ss.sts)
	err := s.runStream(ss, f)
	header, trailer := ss.sts.finish()
	r := resultFrame{trailer: trailer, sent: ss.sent.Load()}
	if !ss.sts.wasSent() {
		r.flags, r.header = flagHasHeader, header
	}
	if err != nil {
		r.status = encodeStatus(err)
	}
	return appendResult(nil, &r)
}

func (s *Server) runStream(ss *serverStream, f *callFrame) error {
	svc, _, sd, err := s.lookup(f.method)
	if err != nil {
		return err
	}
	if sd == nil {
		return status.Errorf(codes.Internal, "method %s is unary, called as a stream", f.method)
	}
	if ss.codec, err = codecFor(f.subtype); err != nil {
		return err
	}
	if s.streamInt == nil {
		return sd.Handler(svc.impl, ss)
	}
	info := &grpc.StreamServerInfo{FullMethod: f.method, IsClientStream: sd.ClientStreams, IsServerStream: sd.ServerStreams}
	return s.streamInt(svc.impl, ss, info, sd.Handler)
}

// encodeStatus encodes a handler's error as a google.rpc.Status, as
// grpc-go's server does: status errors keep their code, message and
// details; context errors map to their codes; others are Unknown.
func encodeStatus(err error) []byte {
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err)
	}
	if st.Code() == codes.OK {
		st = status.New(codes.Unknown, err.Error())
	}
	b, merr := proto.Marshal(st.Proto())
	if merr != nil {
		b, _ = proto.Marshal(status.New(codes.Internal, "alpcgrpc: cannot encode status").Proto())
	}
	return b
}

// serverTransport is a native-mode connection's state on the server.
type serverTransport struct {
	conn *alpc.Conn
	srv  *Server
	peer Addr

	mu      sync.Mutex
	streams map[uint64]*stream
}

// maxPendingStreams bounds the streams a client may refer to before their
// calls arrive.
const maxPendingStreams = 4096

// entryLocked returns the stream with id, creating it if it is new.
func (st *serverTransport) entryLocked(id uint64, maxRecv int) *stream {
	e := st.streams[id]
	if e == nil {
		if len(st.streams) >= maxPendingStreams {
			return nil
		}
		e = newStream(id, st.conn, maxRecv)
		st.streams[id] = e
	}
	return e
}

// dispatch hands a client's one-way frame to its stream. A frame can come
// before the call that opens its stream (calls are served concurrently,
// one-way messages in order): it creates the stream. It never blocks.
func (st *serverTransport) dispatch(f *oneWayFrame) {
	if f.kind == kindHeader {
		return
	}
	st.mu.Lock()
	e := st.entryLocked(f.stream, st.srv.opts.maxRecv)
	if e == nil {
		st.mu.Unlock()
		st.srv.log.Warn("dropping message for too many pending streams", "stream", f.stream)
		return
	}
	e.receive(f)
	if f.kind == kindDone {
		e.mu.Lock()
		finished := e.finished
		e.mu.Unlock()
		if finished {
			delete(st.streams, f.stream)
		}
	}
	st.mu.Unlock()
}

// attach returns the stream a handler serves.
func (st *serverTransport) attach(id uint64, maxRecv int) *stream {
	st.mu.Lock()
	defer st.mu.Unlock()
	if e := st.entryLocked(id, maxRecv); e != nil {
		return e
	}
	// Beyond the bound, the handler still gets a stream of its own.
	return newStream(id, st.conn, maxRecv)
}

// detach marks the handler done; the stream is forgotten once the client
// is done too.
func (st *serverTransport) detach(e *stream) {
	st.mu.Lock()
	defer st.mu.Unlock()
	e.mu.Lock()
	e.finished = true
	done := e.done
	e.broadcastLocked()
	e.mu.Unlock()
	if done && st.streams[e.id] == e {
		delete(st.streams, e.id)
	}
}

// recvOne waits for the one message of a unary call's streamed request.
func (e *stream) recvOne(ctx context.Context) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		switch {
		case len(e.msgs) > 0:
			m := e.msgs[0]
			e.msgs = nil
			return m, nil
		case e.recvErr != nil:
			return nil, e.recvErr
		case ctx.Err() != nil:
			return nil, status.FromContextError(ctx.Err()).Err()
		case e.done || e.ended:
			return nil, status.Error(codes.Internal, "alpcgrpc: the client ended the call before its request")
		case e.conn.Err() != nil:
			return nil, toStatus(e.conn.Err())
		}
		e.wait(ctx)
	}
}

var errHeaderSent = status.Error(codes.Internal, "transport: the stream is done or WriteHeader was already called")

// serverTransportStream is what grpc.SetHeader, grpc.SendHeader and
// grpc.SetTrailer act on.
type serverTransportStream struct {
	method     string
	sendHeader func(metadata.MD) error // streams; nil for unary calls

	mu         sync.Mutex
	header     metadata.MD
	trailer    metadata.MD
	headerSent bool
	done       bool
}

var _ grpc.ServerTransportStream = (*serverTransportStream)(nil)

func (t *serverTransportStream) Method() string { return t.method }

func (t *serverTransportStream) SetHeader(md metadata.MD) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.headerSent || t.done {
		return errHeaderSent
	}
	t.header = metadata.Join(t.header, md)
	return nil
}

func (t *serverTransportStream) SendHeader(md metadata.MD) error {
	t.mu.Lock()
	if t.headerSent || t.done {
		t.mu.Unlock()
		return errHeaderSent
	}
	t.header = metadata.Join(t.header, md)
	t.headerSent = true
	h := t.header
	t.mu.Unlock()
	if t.sendHeader != nil {
		return t.sendHeader(h)
	}
	return nil
}

func (t *serverTransportStream) SetTrailer(md metadata.MD) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return errors.New("alpcgrpc: SetTrailer called after the handler returned")
	}
	t.trailer = metadata.Join(t.trailer, md)
	return nil
}

func (t *serverTransportStream) wasSent() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.headerSent
}

// finish ends the handler's metadata and returns it.
func (t *serverTransportStream) finish() (header, trailer metadata.MD) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done = true
	return t.header, t.trailer
}
