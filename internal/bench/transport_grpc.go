package bench

import (
	"context"
	"fmt"
	"io"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kalpc/kalpc/pkg/alpc/alpcgrpc"
)

// grpcMaxMessage lifts grpc-go's default 4 MiB message limit so that every
// benchmark size fits. Nothing else is tuned: these rows are what a service
// gets out of the box.
const grpcMaxMessage = 1 << 30

// grpcTransport measures a unary grpc-go call (grpc.testing.TestService/
// UnaryCall, protobuf messages with a bytes payload) over three paths:
// TCP across the veth pair between the two namespaces ("grpc-tcp-veth",
// same-node pod-to-pod traffic), TCP over loopback inside one namespace
// ("grpc-tcp-loopback", two containers of a pod) and a Unix socket in the
// shared directory ("grpc-unix").
type grpcTransport struct{ name string }

func (t grpcTransport) Info() Info {
	switch t.name {
	case "grpc-tcp-veth":
		return Info{Name: t.name, Label: "gRPC, TCP over veth", Path: "grpc-go over TCP across a veth pair between the two network namespaces", Placement: CrossNamespace}
	case "grpc-tcp-loopback":
		return Info{Name: t.name, Label: "gRPC, TCP loopback", Path: "grpc-go over TCP on 127.0.0.1 inside one network namespace", Placement: SameNamespace}
	}
	return Info{Name: t.name, Label: "gRPC, Unix socket", Path: "grpc-go over an AF_UNIX stream socket in the shared directory", Placement: CrossNamespace}
}

func (t grpcTransport) Available(env Env, _ int) error {
	if t.name == "grpc-tcp-veth" && !env.Netns {
		return unavailable("needs two network namespaces (run as root with iproute2)")
	}
	return nil
}

func (t grpcTransport) listen(cell Cell) (net.Listener, error) {
	if t.name == "grpc-unix" {
		return net.Listen("unix", cell.SocketPath)
	}
	return net.Listen("tcp", net.JoinHostPort(cell.ListenHost, "0"))
}

func (t grpcTransport) Serve(ctx context.Context, cell Cell) (string, error) {
	ln, err := t.listen(cell)
	if err != nil {
		return "", err
	}
	s := grpc.NewServer(grpc.MaxRecvMsgSize(grpcMaxMessage), grpc.MaxSendMsgSize(grpcMaxMessage))
	testpb.RegisterTestServiceServer(s, &grpcServer{cell: cell, ack: &testpb.SimpleResponse{Payload: &testpb.Payload{Body: newPayload(cell.ReplySize)}}})
	go func() { _ = s.Serve(ln) }()
	go func() {
		<-ctx.Done()
		s.Stop()
	}()
	if t.name == "grpc-unix" {
		return "unix://" + cell.SocketPath, nil
	}
	return "passthrough:///" + ln.Addr().String(), nil
}

type grpcServer struct {
	testpb.UnimplementedTestServiceServer
	cell Cell
	ack  *testpb.SimpleResponse
}

func (s *grpcServer) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	body := req.GetPayload().GetBody()
	if len(body) != s.cell.Size {
		return nil, fmt.Errorf("request of %d B, want %d B", len(body), s.cell.Size)
	}
	if s.cell.ReplySize == s.cell.Size {
		return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: body}}, nil
	}
	return s.ack, nil
}

func (t grpcTransport) Dial(_ context.Context, cell Cell, addr string) (Client, error) {
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(grpcMaxMessage), grpc.MaxCallSendMsgSize(grpcMaxMessage)),
	)
	if err != nil {
		return nil, err
	}
	return newGRPCClient(cc, cc, cell), nil
}

func newGRPCClient(cc grpc.ClientConnInterface, closer io.Closer, cell Cell) *grpcClient {
	return &grpcClient{
		closer:    closer,
		client:    testpb.NewTestServiceClient(cc),
		req:       &testpb.SimpleRequest{ResponseSize: int32(cell.ReplySize), Payload: &testpb.Payload{Body: newPayload(cell.Size)}},
		replySize: cell.ReplySize,
	}
}

type grpcClient struct {
	closer    io.Closer
	client    testpb.TestServiceClient
	req       *testpb.SimpleRequest
	replySize int
}

func (c *grpcClient) RoundTrip(ctx context.Context) error {
	resp, err := c.client.UnaryCall(ctx, c.req, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	if n := len(resp.GetPayload().GetBody()); n != c.replySize {
		return fmt.Errorf("reply of %d B, want %d B", n, c.replySize)
	}
	return nil
}

func (c *grpcClient) Close() error { return c.closer.Close() }

// grpcKalpcTransport measures the same grpc.testing UnaryCall over kalpc
// (pkg/alpc/alpcgrpc). The "compat" row runs grpc-go's own HTTP/2 client and
// server over alpcgrpc's net.Conn byte streams on a kalpc connection; the
// "native" row runs the generated stubs on alpcgrpc's ClientConn and Server,
// where one unary call is one kalpc Call (and a large message travels in a
// section).
type grpcKalpcTransport struct{ native bool }

func (t grpcKalpcTransport) Info() Info {
	if t.native {
		return Info{Name: "grpc-kalpc-native", Label: "gRPC over kalpc (native)", Path: "grpc-go stubs on alpcgrpc.ClientConn/Server: one unary call is one alpc Call, no HTTP/2", Placement: CrossNamespace}
	}
	return Info{Name: "grpc-kalpc-compat", Label: "gRPC over kalpc (compat)", Path: "grpc-go HTTP/2 client and server over alpcgrpc net.Conn byte streams on a kalpc connection", Placement: CrossNamespace}
}

func (grpcKalpcTransport) Available(Env, int) error { return nil }

func (t grpcKalpcTransport) Serve(ctx context.Context, cell Cell) (string, error) {
	impl := &grpcServer{cell: cell, ack: &testpb.SimpleResponse{Payload: &testpb.Payload{Body: newPayload(cell.ReplySize)}}}
	if t.native {
		s := alpcgrpc.NewServer(alpcgrpc.MaxRecvMsgSize(grpcMaxMessage), alpcgrpc.MaxSendMsgSize(grpcMaxMessage))
		testpb.RegisterTestServiceServer(s, impl)
		l, err := s.Listen(cell.SocketPath, nil)
		if err != nil {
			return "", err
		}
		go func() { _ = s.Serve(l) }()
		go func() {
			<-ctx.Done()
			s.Stop()
		}()
		return cell.SocketPath, nil
	}
	l, err := alpcgrpc.Listen(cell.SocketPath, nil)
	if err != nil {
		return "", err
	}
	s := grpc.NewServer(grpc.MaxRecvMsgSize(grpcMaxMessage), grpc.MaxSendMsgSize(grpcMaxMessage))
	testpb.RegisterTestServiceServer(s, impl)
	go func() { _ = s.Serve(l) }()
	go func() {
		<-ctx.Done()
		s.Stop()
	}()
	return cell.SocketPath, nil
}

func (t grpcKalpcTransport) Dial(_ context.Context, cell Cell, addr string) (Client, error) {
	callOpts := grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(grpcMaxMessage), grpc.MaxCallSendMsgSize(grpcMaxMessage))
	var cc grpc.ClientConnInterface
	var closer io.Closer
	if t.native {
		c, err := alpcgrpc.NewClient(addr, alpcgrpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(grpcMaxMessage), grpc.MaxCallSendMsgSize(grpcMaxMessage)))
		if err != nil {
			return nil, err
		}
		cc, closer = c, c
	} else {
		var d alpcgrpc.Dialer
		c, err := grpc.NewClient("passthrough:///"+addr, d.DialOption(), grpc.WithTransportCredentials(insecure.NewCredentials()), callOpts)
		if err != nil {
			return nil, err
		}
		cc, closer = c, c
	}
	return newGRPCClient(cc, closer, cell), nil
}
