//go:build linux && !kalpc_stub

package alpcgrpc_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kalpc/kalpc/pkg/alpc/alpcgrpc"
)

// interopCase is one of grpc-go's interoperability test cases.
type interopCase struct {
	name string
	run  func(ctx context.Context, conn grpc.ClientConnInterface)
}

// interopCases are grpc-go's own cases, as the interop client runs them.
var interopCases = []interopCase{
	{"empty_unary", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoEmptyUnaryCall(ctx, testgrpc.NewTestServiceClient(c))
	}},
	{"large_unary", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoLargeUnaryCall(ctx, testgrpc.NewTestServiceClient(c))
	}},
	{"client_streaming", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoClientStreaming(ctx, testgrpc.NewTestServiceClient(c))
	}},
	{"server_streaming", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoServerStreaming(ctx, testgrpc.NewTestServiceClient(c))
	}},
	{"ping_pong", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoPingPong(ctx, testgrpc.NewTestServiceClient(c))
	}},
	{"empty_stream", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoEmptyStream(ctx, testgrpc.NewTestServiceClient(c))
	}},
	{"cancel_after_begin", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoCancelAfterBegin(ctx, testgrpc.NewTestServiceClient(c))
	}},
	{"cancel_after_first_response", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoCancelAfterFirstResponse(ctx, testgrpc.NewTestServiceClient(c))
	}},
	{"timeout_on_sleeping_server", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoTimeoutOnSleepingServer(ctx, testgrpc.NewTestServiceClient(c))
	}},
	{"status_code_and_message", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoStatusCodeAndMessage(ctx, testgrpc.NewTestServiceClient(c))
	}},
	{"special_status_message", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoSpecialStatusMessage(ctx, testgrpc.NewTestServiceClient(c))
	}},
	{"unimplemented_method", func(ctx context.Context, c grpc.ClientConnInterface) {
		if cc, ok := c.(*grpc.ClientConn); ok {
			interop.DoUnimplementedMethod(ctx, cc)
			return
		}
		// interop.DoUnimplementedMethod takes a *grpc.ClientConn; this is
		// its body, on the native ClientConn.
		if err := c.Invoke(ctx, "/grpc.testing.TestService/UnimplementedCall", nil, nil); status.Code(err) != codes.Unimplemented {
			panic(fatalPanic("Invoke(UnimplementedCall) = " + err.Error()))
		}
	}},
	{"unimplemented_service", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoUnimplementedService(ctx, testgrpc.NewUnimplementedServiceClient(c))
	}},
	{"custom_metadata", func(ctx context.Context, c grpc.ClientConnInterface) {
		interop.DoCustomMetadata(ctx, testgrpc.NewTestServiceClient(c))
	}},
}

// dialCompat returns a grpc.ClientConn over a compatibility-mode port.
func dialCompat(t testing.TB, path string) *grpc.ClientConn {
	t.Helper()
	var d alpcgrpc.Dialer
	cc, err := grpc.NewClient("passthrough:///"+path, d.DialOption(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// dialNative returns a native ClientConn.
func dialNative(t testing.TB, path string, opts ...alpcgrpc.DialOption) *alpcgrpc.ClientConn {
	t.Helper()
	cc, err := alpcgrpc.NewClient(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// TestInterop runs grpc-go's interoperability cases against interop's
// test server in another process, in both modes.
func TestInterop(t *testing.T) {
	for _, mode := range []string{"compat", "native"} {
		t.Run(mode, func(t *testing.T) {
			checkLeaks(t)
			path, _ := startServer(t, mode+"-server")
			var conn grpc.ClientConnInterface
			if mode == "compat" {
				cc := dialCompat(t, path)
				defer cc.Close()
				conn = cc
			} else {
				cc := dialNative(t, path)
				defer cc.Close()
				conn = cc
			}
			for _, tc := range interopCases {
				t.Run(tc.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
					defer cancel()
					defer func() {
						if p := recover(); p != nil {
							if msg, ok := p.(fatalPanic); ok {
								t.Fatalf("interop case failed: %s", msg)
							}
							panic(p)
						}
					}()
					tc.run(ctx, conn)
				})
			}
		})
	}
}
