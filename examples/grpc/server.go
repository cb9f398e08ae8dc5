package main

import (
	"context"
	"log"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/kalpc/kalpc/pkg/alpc"
	"github.com/kalpc/kalpc/pkg/alpc/alpcgrpc"
)

// serve serves the health service until ctx ends, then stops gracefully.
func serve(ctx context.Context, addr string, mode string) error {
	hs := health.NewServer() // reports SERVING for the server as a whole ("")
	if mode == "native" {
		return serveNative(ctx, addr, hs)
	}
	return serveCompat(ctx, addr, hs)
}

// serveNative: services register on an alpcgrpc.Server exactly as on a
// grpc.Server, and run on kalpc calls.
func serveNative(ctx context.Context, addr string, hs *health.Server) error {
	srv := alpcgrpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)

	// In a pod, the port is the ConnectionPort published through the
	// sidecar; elsewhere a socket path. Serve takes either (an
	// alpc.Acceptor).
	var port alpc.Acceptor
	var err error
	if brokered() {
		port, err = srv.Publish(ctx, addr, nil)
	} else {
		port, err = srv.Listen(addr, nil)
	}
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		hs.Shutdown() // tell watchers NOT_SERVING, then drain
		srv.GracefulStop()
	}()
	log.Printf("server: serving native gRPC on %s", describe(addr))
	return srv.Serve(port)
}

// serveCompat: an ordinary grpc.Server serves a net.Listener whose
// connections are kalpc channels.
func serveCompat(ctx context.Context, addr string, hs *health.Server) error {
	var l net.Listener
	var err error
	if brokered() {
		l, err = alpcgrpc.Publish(ctx, addr, nil)
	} else {
		l, err = alpcgrpc.Listen(addr, nil)
	}
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	go func() {
		<-ctx.Done()
		hs.Shutdown()
		srv.GracefulStop()
	}()
	log.Printf("server: serving gRPC (HTTP/2, compat mode) on %s", describe(addr))
	return srv.Serve(l)
}
