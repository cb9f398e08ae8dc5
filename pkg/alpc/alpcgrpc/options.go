package alpcgrpc

import (
	"context"

	"google.golang.org/grpc"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// DialOption configures a native ClientConn (see NewClient).
type DialOption func(*dialOptions)

type dialOptions struct {
	cfg          *alpc.Config
	unaryInts    []grpc.UnaryClientInterceptor
	streamInts   []grpc.StreamClientInterceptor
	callOpts     []grpc.CallOption
	fallback     string
	fallbackOpts []grpc.DialOption
	hasFallback  bool
	broker       bool
}

// WithConfig configures the kalpc connection as in alpc.Dial; its Handler
// must be nil. Defaults to nil (kalpc's defaults).
func WithConfig(cfg *alpc.Config) DialOption {
	return func(o *dialOptions) { o.cfg = cfg }
}

// WithBroker makes the ClientConn connect through the pod's kalpc broker
// (the sidecar at alpc.EnvSocket) with alpc.Connect: NewClient's path is
// then a connection port name ("namespace/name", or "name" in the pod's
// own namespace), and WithFallback applies when the port has no server on
// this node. Defaults to dialing a socket path.
func WithBroker() DialOption {
	return func(o *dialOptions) { o.broker = true }
}

// WithChainUnaryInterceptor adds unary interceptors, run in order for every
// unary call, as grpc.WithChainUnaryInterceptor does. The interceptors'
// *grpc.ClientConn argument is nil: a native connection is not a
// grpc.ClientConn.
func WithChainUnaryInterceptor(ints ...grpc.UnaryClientInterceptor) DialOption {
	return func(o *dialOptions) { o.unaryInts = append(o.unaryInts, ints...) }
}

// WithChainStreamInterceptor adds stream interceptors, run in order for
// every stream, as grpc.WithChainStreamInterceptor does. The interceptors'
// *grpc.ClientConn argument is nil.
func WithChainStreamInterceptor(ints ...grpc.StreamClientInterceptor) DialOption {
	return func(o *dialOptions) { o.streamInts = append(o.streamInts, ints...) }
}

// WithDefaultCallOptions sets call options applied to every call before
// the call's own, as grpc.WithDefaultCallOptions does.
func WithDefaultCallOptions(opts ...grpc.CallOption) DialOption {
	return func(o *dialOptions) { o.callOpts = append(o.callOpts, opts...) }
}

// WithFallback makes the ClientConn fall back to an ordinary gRPC
// connection to target, made with grpc.NewClient(target, opts...), when no
// kalpc port listens at the path (the server is not on this node), and off
// Linux, where kalpc cannot run (alpc.ErrUnsupported), so the same client
// works on a developer's macOS or Windows machine. Without it, calls then
// fail with codes.Unavailable and Connect with an error wrapping ErrNoPort
// (or alpc.ErrUnsupported). The decision is taken at the first connection and
// kept for the ClientConn's lifetime.
func WithFallback(target string, opts ...grpc.DialOption) DialOption {
	return func(o *dialOptions) {
		o.fallback, o.fallbackOpts, o.hasFallback = target, opts, true
	}
}

// ServerOption configures a native Server (see NewServer).
type ServerOption func(*serverOptions)

type serverOptions struct {
	unaryInts  []grpc.UnaryServerInterceptor
	streamInts []grpc.StreamServerInterceptor
	maxRecv    int
	maxSend    int
}

// ChainUnaryInterceptor adds unary interceptors, run in order around every
// unary handler, as grpc.ChainUnaryInterceptor does.
func ChainUnaryInterceptor(ints ...grpc.UnaryServerInterceptor) ServerOption {
	return func(o *serverOptions) { o.unaryInts = append(o.unaryInts, ints...) }
}

// ChainStreamInterceptor adds stream interceptors, run in order around
// every stream handler, as grpc.ChainStreamInterceptor does.
func ChainStreamInterceptor(ints ...grpc.StreamServerInterceptor) ServerOption {
	return func(o *serverOptions) { o.streamInts = append(o.streamInts, ints...) }
}

// MaxRecvMsgSize sets the largest message the server receives. Defaults to
// DefaultMaxRecvMsgSize (4 MiB), as in grpc-go.
func MaxRecvMsgSize(n int) ServerOption {
	return func(o *serverOptions) { o.maxRecv = n }
}

// MaxSendMsgSize sets the largest message the server sends. Defaults to
// DefaultMaxSendMsgSize (math.MaxInt32), as in grpc-go.
func MaxSendMsgSize(n int) ServerOption {
	return func(o *serverOptions) { o.maxSend = n }
}

func chainUnaryClient(ints []grpc.UnaryClientInterceptor, final grpc.UnaryInvoker) grpc.UnaryInvoker {
	for i := len(ints) - 1; i >= 0; i-- {
		ic, next := ints[i], final
		final = func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
			return ic(ctx, method, req, reply, cc, next, opts...)
		}
	}
	return final
}

func chainStreamClient(ints []grpc.StreamClientInterceptor, final grpc.Streamer) grpc.Streamer {
	for i := len(ints) - 1; i >= 0; i-- {
		ic, next := ints[i], final
		final = func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return ic(ctx, desc, cc, method, next, opts...)
		}
	}
	return final
}

func chainUnaryServer(ints []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	switch len(ints) {
	case 0:
		return nil
	case 1:
		return ints[0]
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		for i := len(ints) - 1; i > 0; i-- {
			ic, next := ints[i], handler
			handler = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, next) }
		}
		return ints[0](ctx, req, info, handler)
	}
}

func chainStreamServer(ints []grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	switch len(ints) {
	case 0:
		return nil
	case 1:
		return ints[0]
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		for i := len(ints) - 1; i > 0; i-- {
			ic, next := ints[i], handler
			handler = func(srv any, ss grpc.ServerStream) error { return ic(srv, ss, info, next) }
		}
		return ints[0](srv, ss, info, handler)
	}
}
