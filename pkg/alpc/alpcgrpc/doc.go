// Package alpcgrpc runs gRPC over kalpc channels, in two modes.
//
// # Compatibility mode
//
// Listen returns a net.Listener over a kalpc connection port, and a
// Dialer's DialContext fits grpc.WithContextDialer. Each kalpc connection
// becomes a net.Conn byte stream (ordered one-way kalpc messages), so an
// unmodified grpc.Server and grpc.ClientConn speak HTTP/2 over it, with
// every gRPC feature: all call kinds, metadata, deadlines, cancellation,
// interceptors, keepalive, health checking, reflection.
//
//	l, err := alpcgrpc.Listen("/run/app/greeter.sock", nil)
//	srv := grpc.NewServer()
//	pb.RegisterGreeterServer(srv, impl)
//	go srv.Serve(l)
//
//	var d alpcgrpc.Dialer
//	cc, err := grpc.NewClient("passthrough:///run/app/greeter.sock",
//		d.DialOption(), grpc.WithTransportCredentials(insecure.NewCredentials()))
//
// # Native mode
//
// NewServer returns a Server that implements grpc.ServiceRegistrar and
// NewClient a ClientConn that implements grpc.ClientConnInterface, so
// generated stubs run directly on kalpc, with no HTTP/2: a unary call is
// one kalpc call; a stream is one kalpc call that lasts as long as the
// server's handler (which gives it kalpc's deadline and cancellation
// propagation), with its messages beside it as ordered one-way messages
// under a per-stream flow-control window. docs/grpc.md describes the
// framing.
//
//	srv := alpcgrpc.NewServer()
//	pb.RegisterGreeterServer(srv, impl)
//	l, err := srv.Listen("/run/app/greeter.sock", nil)
//	go srv.Serve(l)
//
//	cc, err := alpcgrpc.NewClient("/run/app/greeter.sock")
//	client := pb.NewGreeterClient(cc)
//
// A port serves one mode; a client of the other mode is rejected with a
// reason that says so.
//
// # In Kubernetes, through the kalpc sidecar
//
// In a pod with the kalpc sidecar, ports are published and reached by name
// through the sidecar (alpc.Publish and alpc.Connect), not by socket path.
// Publish (compatibility mode) and Server.Publish (native mode) publish a
// declared ConnectionPort; Server.Serve takes either kind of port (an
// alpc.Acceptor). Dialer.Broker and WithBroker make clients connect to
// "namespace/name":
//
//	p, err := srv.Publish(ctx, "greeter", nil) // native server pod
//	go srv.Serve(p)
//
//	cc, err := alpcgrpc.NewClient("apps/greeter", alpcgrpc.WithBroker()) // client pod
//
// # When the server is not on this host
//
// Without a kalpc port at the path (or, through the broker, without a
// server of the port on this node), dials fail with an error wrapping
// ErrNoPort (native calls fail with codes.Unavailable). Dialer.Fallback and
// WithFallback opt in to an ordinary gRPC connection instead.
//
// Off Linux (a developer's macOS or Windows machine) the package compiles
// but kalpc cannot run: Listen, Publish and dials fail with an error
// wrapping alpc.ErrUnsupported, and Dialer.Fallback and WithFallback take
// over as when the server is not on this host.
//
// # Ownership
//
// Every kalpc connection is owned by the net.Conn or ClientConn or Server
// that made it and closed by its Close (or Stop). Messages received belong
// to the stream they arrived on until the application takes them.
package alpcgrpc
