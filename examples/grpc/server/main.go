// Command server serves gRPC's health service on a kalpc port, in native
// or compatibility mode. Copy it and register your own services.
//
//	go run ./examples/grpc/server -port /tmp/health.sock -mode native
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	alpcgrpc "github.com/kalpc/kalpc/pkg/alpc/grpc"
)

func main() {
	port := flag.String("port", "/tmp/health.sock", "path of the kalpc port")
	mode := flag.String("mode", "native", "native or compat")
	flag.Parse()

	hs := health.NewServer()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt)

	switch *mode {
	case "native":
		srv := alpcgrpc.NewServer()
		healthpb.RegisterHealthServer(srv, hs)
		reflection.Register(srv)
		l, err := srv.Listen(*port, nil)
		if err != nil {
			log.Fatal(err)
		}
		go func() { <-stop; srv.GracefulStop() }()
		log.Printf("serving native gRPC on kalpc port %s", *port)
		if err := srv.Serve(l); err != nil {
			log.Fatal(err)
		}
	case "compat":
		l, err := alpcgrpc.Listen(*port, nil)
		if err != nil {
			log.Fatal(err)
		}
		srv := grpc.NewServer()
		healthpb.RegisterHealthServer(srv, hs)
		reflection.Register(srv)
		go func() { <-stop; srv.GracefulStop() }()
		log.Printf("serving gRPC (HTTP/2) on kalpc port %s", *port)
		if err := srv.Serve(l); err != nil {
			log.Fatal(err)
		}
	default:
		log.Fatalf("unknown mode %q", *mode)
	}
}
