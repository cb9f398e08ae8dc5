// Command client checks the health of the server in ../server over kalpc,
// in native or compatibility mode; with -fallback it uses an ordinary gRPC
// target when no kalpc port is on this host.
//
//	go run ./examples/grpc/client -port /tmp/health.sock -mode native
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	alpcgrpc "github.com/kalpc/kalpc/pkg/alpc/grpc"
)

func main() {
	port := flag.String("port", "/tmp/health.sock", "path of the kalpc port")
	mode := flag.String("mode", "native", "native or compat")
	fallback := flag.String("fallback", "", "gRPC target to use when no kalpc port is on this host (for example dns:///health.default:50051)")
	flag.Parse()
	if err := run(*port, *mode, *fallback); err != nil {
		log.Fatal(err)
	}
}

func run(port, mode, fallback string) error {
	var conn grpc.ClientConnInterface
	switch mode {
	case "native":
		var opts []alpcgrpc.DialOption
		if fallback != "" {
			opts = append(opts, alpcgrpc.WithFallback(fallback, grpc.WithTransportCredentials(insecure.NewCredentials())))
		}
		cc, err := alpcgrpc.NewClient(port, opts...)
		if err != nil {
			return err
		}
		defer cc.Close()
		conn = cc
	case "compat":
		var d alpcgrpc.Dialer
		if fallback != "" {
			return errors.New("-fallback: in compatibility mode, set Dialer.Fallback to dial your service's address")
		}
		cc, err := grpc.NewClient("passthrough:///"+port, d.DialOption(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		conn = cc
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	log.Printf("server status: %v", resp.GetStatus())
	return nil
}
