package main

import (
	"testing"
	"time"

	"github.com/kalpc/kalpc/examples/internal/exampletest"
)

func TestMain(m *testing.M) { exampletest.Main(m, main) }

// TestGRPC runs the server and client as separate processes in each mode,
// and a client of the other mode, which the port rejects with a reason.
func TestGRPC(t *testing.T) {
	for _, tc := range []struct{ mode, other, rejected string }{
		{"native", "compat", "this kalpc port serves native gRPC; dial it with alpcgrpc.NewClient"},
		{"compat", "native", "this kalpc port serves gRPC in compatibility mode (HTTP/2); dial it with alpcgrpc.Dialer"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			sock := exampletest.Socket(t)
			server := exampletest.Start(t, "server", "-mode", tc.mode, "-socket", sock)
			server.WaitFor(t, "on socket "+sock, 5*time.Second)

			out, err := exampletest.Run(t, 20*time.Second, "client", "-mode", tc.mode, "-socket", sock, "-calls", "200")
			if err != nil {
				t.Fatalf("client: %v\n%s", err, out)
			}
			exampletest.Contains(t, out,
				"client: "+tc.mode+" mode over socket "+sock+": server status SERVING",
				"client: watch (server stream) says SERVING",
				"client: unknown service: NotFound",
				"client: 200 unary calls in",
				"grpc: all checks passed",
			)

			out, err = exampletest.Run(t, 10*time.Second, "client", "-mode", tc.other, "-socket", sock, "-wait", "0s")
			if err == nil {
				t.Errorf("a %s client of a %s port succeeded; output:\n%s", tc.other, tc.mode, out)
			}
			exampletest.Contains(t, out, tc.rejected)

			if out, err := server.Stop(t); err != nil {
				t.Errorf("server: %v\n%s", err, out)
			}
		})
	}
}
