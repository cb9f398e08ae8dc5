//go:build !linux || kalpc_stub

package alpcgrpc_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kalpc/kalpc/pkg/alpc"
	"github.com/kalpc/kalpc/pkg/alpc/alpcgrpc"
)

// TestFallbackOffLinux runs where kalpc cannot (off Linux, or on Linux with
// -tags kalpc_stub): servers fail with alpc.ErrUnsupported, and clients
// with a fallback (Dialer.Fallback, WithFallback) reach the service over
// the network instead, so one client works on a developer's machine too.
func TestFallbackOffLinux(t *testing.T) {
	ctx := t.Context()
	port := t.TempDir() + "/greeter"

	if _, err := alpcgrpc.Listen(port, nil); !errors.Is(err, alpc.ErrUnsupported) {
		t.Errorf("Listen = %v, want ErrUnsupported", err)
	}
	if _, err := alpcgrpc.NewServer().Listen(port, nil); !errors.Is(err, alpc.ErrUnsupported) {
		t.Errorf("Server.Listen = %v, want ErrUnsupported", err)
	}

	// The same service over TCP on loopback: the network target.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	target := lis.Addr().String()
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	check := func(cc grpc.ClientConnInterface) error {
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			err = errors.New(resp.GetStatus().String())
		}
		return err
	}

	// Compatibility mode.
	var d alpcgrpc.Dialer
	if _, err := d.DialContext(ctx, port); !errors.Is(err, alpc.ErrUnsupported) {
		t.Errorf("DialContext without fallback = %v, want ErrUnsupported", err)
	}
	d.Fallback = func(ctx context.Context, _ string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, "tcp", target)
	}
	gc, err := grpc.NewClient("passthrough:///"+port, d.DialOption(), creds)
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	if err := check(gc); err != nil {
		t.Errorf("compatibility-mode call through Dialer.Fallback: %v", err)
	}

	// Native mode.
	cc, err := alpcgrpc.NewClient(port)
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Connect(ctx); !errors.Is(err, alpc.ErrUnsupported) || errors.Is(err, alpcgrpc.ErrNoPort) {
		t.Errorf("native Connect without fallback = %v, want ErrUnsupported (not ErrNoPort)", err)
	}
	_ = cc.Close()
	cc, err = alpcgrpc.NewClient(port, alpcgrpc.WithFallback("passthrough:///"+target, creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := check(cc); err != nil {
		t.Errorf("native-mode call through WithFallback: %v", err)
	}
	if cc.Fallback() == nil {
		t.Error("native ClientConn did not fall back")
	}
}
