// Command grpc runs a gRPC service over kalpc: gRPC's health service (with
// reflection), served and called in either of kalpc's two gRPC modes. Copy
// it and register your own services.
//
//   - native mode: generated stubs run directly on kalpc calls, no HTTP/2
//     (alpcgrpc.NewServer, alpcgrpc.NewClient);
//   - compat mode: an unmodified grpc.Server and grpc.ClientConn speak
//     HTTP/2 over a kalpc connection (alpcgrpc.Listen, alpcgrpc.Dialer).
//
// On one machine (no Kubernetes):
//
//	grpc server -mode native -socket /tmp/kalpc-grpc.sock
//	grpc client -mode native -socket /tmp/kalpc-grpc.sock
//
// In a pod with the kalpc sidecar (KALPC_SOCKET set), -port names the
// ConnectionPort instead; see grpc.yaml and README.md. A port serves one
// mode: a client of the other mode is rejected with a reason saying so.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kalpc/kalpc/examples/internal/endpoint"
)

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	var addr endpoint.Addr
	addr.RegisterFlags(fs, "health", filepath.Join(os.TempDir(), "kalpc-grpc.sock"))
	mode := fs.String("mode", "native", "native (gRPC on kalpc calls) or compat (HTTP/2 over kalpc)")
	calls := fs.Int("calls", 1000, "client: timed health checks after the first")
	wait := fs.Duration("wait", 30*time.Second, "client: how long to wait for the server to publish the port")
	_ = fs.Parse(os.Args[2:])
	if *mode != "native" && *mode != "compat" {
		usage()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch os.Args[1] {
	case "server":
		err = serve(ctx, addr, *mode)
	case "client":
		ctx, cancel := context.WithTimeout(ctx, *wait+30*time.Second)
		err = client(ctx, addr, *mode, *calls, *wait)
		cancel()
	default:
		usage()
	}
	stop()
	if err != nil {
		log.Printf("%s: %v", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: grpc server|client [-mode native|compat] [-socket path | -port [namespace/]name] [-calls n]")
	os.Exit(2)
}
