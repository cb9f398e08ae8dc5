package alpcgrpc_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// TestPeerDeath kills the server process mid-stream: the client's stream
// and unary calls fail fast with codes.Unavailable, and nothing leaks.
func TestPeerDeath(t *testing.T) {
	checkLeaks(t)
	path, srv := startServer(t, "native-server")
	cc := dialNative(t, path)
	defer cc.Close()
	tc := testgrpc.NewTestServiceClient(cc)
	stream, err := tc.FullDuplexCall(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 10}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	srv.kill()
	start := time.Now()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("Recv after the server died = %v, want Unavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Recv took %v to notice the dead server", d)
	}
	if _, err := tc.EmptyCall(t.Context(), &testgrpc.Empty{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("EmptyCall after the server died = %v, want Unavailable", err)
	}
}

// TestWrongMode checks that a port rejects clients of the other mode with
// a reason that says what to do.
func TestWrongMode(t *testing.T) {
	path, _ := startServer(t, "compat-server")
	cc := dialNative(t, path)
	defer cc.Close()
	_, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "compatibility mode") {
		t.Fatalf("native call to a compatibility port = %v, want Unavailable naming the mode", err)
	}
}
