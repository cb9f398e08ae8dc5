package main

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The gRPC echo service the server also runs, over TCP on the pod network,
// so that the client can compare the same calls over kalpc and over gRPC.
// One unary method: kalpc.examples.Echo/Echo(BytesValue) returns BytesValue.
const echoMethod = "/kalpc.examples.Echo/Echo"

// grpcMaxMessage is large enough for the largest -compare size (1 MiB) with
// room to spare.
const grpcMaxMessage = 16 << 20

type echoServer interface {
	Echo(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
}

type echo struct{}

func (echo) Echo(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	return in, nil
}

var echoService = grpc.ServiceDesc{
	ServiceName: "kalpc.examples.Echo",
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(echoServer).Echo(ctx, in)
		},
	}},
}

// serveGRPC serves the echo service and gRPC's health service on addr; it
// returns the address on the pod's IP clients use, the health server (the
// kubelet's readiness probe asks it), and a function that stops the server.
// Health starts NOT_SERVING.
func serveGRPC(addr string) (string, *health.Server, func(), error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, nil, fmt.Errorf("gRPC echo: %w", err)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(grpcMaxMessage), grpc.MaxSendMsgSize(grpcMaxMessage))
	srv.RegisterService(&echoService, echo{})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(l) }()
	port := l.Addr().(*net.TCPAddr).Port
	return net.JoinHostPort(podIP(), fmt.Sprint(port)), hs, srv.Stop, nil
}

// dialGRPC connects to the echo service at addr (plain TCP, no TLS: the
// comparison is about the transport).
func dialGRPC(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(grpcMaxMessage), grpc.MaxCallSendMsgSize(grpcMaxMessage)))
}

// grpcEcho makes one Echo call.
func grpcEcho(ctx context.Context, cc *grpc.ClientConn, payload []byte) ([]byte, error) {
	out := new(wrapperspb.BytesValue)
	if err := cc.Invoke(ctx, echoMethod, &wrapperspb.BytesValue{Value: payload}, out); err != nil {
		return nil, err
	}
	return out.Value, nil
}
