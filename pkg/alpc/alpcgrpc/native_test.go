//go:build linux && !kalpc_stub

package alpcgrpc_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kalpc/kalpc/pkg/alpc/alpcgrpc"
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

// TestLargeUnary sends requests and responses from inline sizes to 48 MiB
// through native mode (large ones are encoded straight into shared memory
// and decoded in place) and checks both directions by content, then the
// size limits on each side.
func TestLargeUnary(t *testing.T) {
	checkLeaks(t)
	path, _ := startServer(t, "hash-server")
	cc := dialNative(t, path, alpcgrpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	defer cc.Close()
	tc := testgrpc.NewTestServiceClient(cc)
	for _, size := range []int{0, 1000, 63 << 10, 64 << 10, 1 << 20, 16 << 20, 48 << 20} {
		body := pattern(size, 1)
		resp, err := tc.UnaryCall(t.Context(), &testgrpc.SimpleRequest{ResponseSize: int32(size), Payload: &testgrpc.Payload{Body: body}})
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		sum := sha256.Sum256(body)
		if resp.GetUsername() != hex.EncodeToString(sum[:]) {
			t.Errorf("%d bytes: the server hashed a different request", size)
		}
		if !bytes.Equal(resp.GetPayload().GetBody(), pattern(size, 7)) {
			t.Errorf("%d bytes: the response payload differs", size)
		}
	}

	t.Run("limits", func(t *testing.T) {
		req := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 2<<20)}}
		_, err := tc.UnaryCall(t.Context(), req, grpc.MaxCallSendMsgSize(1<<20))
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("2 MiB request over a 1 MiB send limit: %v; want ResourceExhausted", err)
		}
		req = &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 65<<20)}}
		if _, err := tc.UnaryCall(t.Context(), req); status.Code(err) != codes.ResourceExhausted {
			t.Errorf("65 MiB request to a server taking 64 MiB: %v; want ResourceExhausted", err)
		}
		req = &testgrpc.SimpleRequest{ResponseSize: 8 << 20}
		if _, err := tc.UnaryCall(t.Context(), req, grpc.MaxCallRecvMsgSize(4<<20)); status.Code(err) != codes.ResourceExhausted {
			t.Errorf("8 MiB response over a 4 MiB receive limit: %v; want ResourceExhausted", err)
		}
		// The connection is still good.
		if _, err := tc.UnaryCall(t.Context(), &testgrpc.SimpleRequest{ResponseSize: 1 << 20}); err != nil {
			t.Errorf("call after the limit errors: %v", err)
		}
	})
}
