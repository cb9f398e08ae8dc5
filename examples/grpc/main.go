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

	"github.com/kalpc/kalpc/pkg/alpc"
)

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	port := fs.String("port", "health", `with the kalpc sidecar (KALPC_SOCKET set): the ConnectionPort, "name" or "namespace/name"`)
	socket := fs.String("socket", filepath.Join(os.TempDir(), "kalpc-grpc.sock"), "without the sidecar: the port's socket path")
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
		err = serve(ctx, target(*port, *socket), *mode)
	case "client":
		ctx, cancel := context.WithTimeout(ctx, *wait+30*time.Second)
		err = client(ctx, target(*port, *socket), *mode, *calls, *wait)
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

// brokered reports whether this process runs next to a kalpc sidecar,
// which sets KALPC_SOCKET in every application container: ports are then
// ConnectionPort names published and reached through the sidecar, not
// socket paths.
func brokered() bool { return os.Getenv(alpc.EnvSocket) != "" }

// target is the port's address: its name through the sidecar, else its
// socket path.
func target(port, socket string) string {
	if brokered() {
		return port
	}
	return socket
}

// describe says how the port at addr is reached, for the log.
func describe(addr string) string {
	if brokered() {
		return "port " + addr + " (through the kalpc sidecar)"
	}
	return "socket " + addr
}
