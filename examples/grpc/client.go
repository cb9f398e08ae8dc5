package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kalpc/kalpc/pkg/alpc/alpcgrpc"
)

// client checks the server's health, watches it (a server stream), and
// times calls. Generated stubs take either kind of connection.
func client(ctx context.Context, addr string, mode string, calls int, wait time.Duration) error {
	var conn grpc.ClientConnInterface
	if mode == "native" {
		var opts []alpcgrpc.DialOption
		if brokered() {
			// In a pod: addr is the ConnectionPort, reached through the sidecar.
			opts = append(opts, alpcgrpc.WithBroker())
		}
		cc, err := alpcgrpc.NewClient(addr, opts...)
		if err != nil {
			return err
		}
		defer cc.Close()
		conn = cc
	} else {
		d := alpcgrpc.Dialer{Broker: brokered()}
		cc, err := grpc.NewClient("passthrough:///"+addr, d.DialOption(),
			grpc.WithTransportCredentials(insecure.NewCredentials())) // the kalpc channel is private to the two processes
		if err != nil {
			return err
		}
		defer cc.Close()
		conn = cc
	}
	health := healthpb.NewHealthClient(conn)

	// Retry while the server is not there yet (Unavailable), so client
	// and server may start in any order.
	var resp *healthpb.HealthCheckResponse
	var err error
	for deadline := time.Now().Add(wait); ; {
		resp, err = health.Check(ctx, &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	log.Printf("client: %s mode over %s: server status %v", mode, describe(addr), resp.GetStatus())

	watch, err := health.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	first, err := watch.Recv()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	log.Printf("client: watch (server stream) says %v", first.GetStatus())

	// An unknown service is an ordinary gRPC status, as with any transport.
	_, err = health.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	if status.Code(err) != codes.NotFound {
		return fmt.Errorf("check of an unknown service: %w, want NotFound", err)
	}
	log.Printf("client: unknown service: %v", status.Code(err))

	start := time.Now()
	for range calls {
		if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			return err
		}
	}
	if calls > 0 {
		el := time.Since(start)
		log.Printf("client: %d unary calls in %v (%.1f µs each)", calls, el.Round(time.Millisecond), float64(el.Microseconds())/float64(calls))
	}
	log.Printf("grpc: all checks passed")
	return nil
}
