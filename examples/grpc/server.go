package main

import (
	"context"
	"log"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/kalpc/kalpc/examples/internal/endpoint"
	"github.com/kalpc/kalpc/pkg/alpc/alpcgrpc"
)

// serve serves the health service until ctx ends, then stops gracefully.
func serve(ctx context.Context, addr endpoint.Addr, mode string) error {
	hs := health.NewServer() // reports SERVING for the server as a whole ("")
	if mode == "native" {
		return serveNative(ctx, addr, hs)
	}
	return serveCompat(ctx, addr, hs)
}

// serveNative: services register on an alpcgrpc.Server exactly as on a
// grpc.Server, and run on kalpc calls.
func serveNative(ctx context.Context, addr endpoint.Addr, hs *health.Server) error {
	srv := alpcgrpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)

	var serveFn func() error
	if endpoint.Brokered() {
		// In a pod: publish the ConnectionPort through the sidecar.
		p, err := srv.Publish(ctx, addr.Port, nil)
		if err != nil {
			return err
		}
		serveFn = func() error { return srv.ServePort(p) }
	} else {
		l, err := srv.Listen(addr.Socket, nil)
		if err != nil {
			return err
		}
		serveFn = func() error { return srv.Serve(l) }
	}
	go func() {
		<-ctx.Done()
		hs.Shutdown() // tell watchers NOT_SERVING, then drain
		srv.GracefulStop()
	}()
	log.Printf("server: serving native gRPC on %s", addr)
	return serveFn()
}

// serveCompat: an ordinary grpc.Server serves a net.Listener whose
// connections are kalpc channels.
func serveCompat(ctx context.Context, addr endpoint.Addr, hs *health.Server) error {
	var l net.Listener
	var err error
	if endpoint.Brokered() {
		l, err = alpcgrpc.Publish(ctx, addr.Port, nil)
	} else {
		l, err = alpcgrpc.Listen(addr.Socket, nil)
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
	log.Printf("server: serving gRPC (HTTP/2, compat mode) on %s", addr)
	return srv.Serve(l)
}
