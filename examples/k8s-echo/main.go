// Command k8s-echo is kalpc's echo example for Kubernetes: a server pod
// publishes a connection port through its kalpc sidecar (alpc.Publish) and a
// client pod connects to it (alpc.Connect). They exchange an inline message,
// a section-sized message in each direction (shared memory, read in place by
// the server), a zero-copy loan, regions granted for direct access
// (read-only and read-write, in both directions), and a callback from the
// server into the client, each verified by content; and they prove they
// live in different network namespaces.
//
//	k8s-echo server -port echo                 # publish port "echo" in the pod's namespace (+ gRPC echo on :9090)
//	k8s-echo client -port apps/echo            # connect, run the checks, exit 0 if all pass
//	k8s-echo client -port apps/echo -hold      # then wait for the server to go: peer-closed
//	k8s-echo client -port apps/echo -compare   # then the same calls over kalpc and over gRPC to the server pod's IP
//	k8s-echo load -port apps/echo -servers 2   # call in a loop, reconnecting, until a second server pod answered
//
// The manifests in this directory run both with the sidecar injected
// (make demo runs them on a local cluster). The client prints one "PASS" or
// "FAIL" line per check and "k8s-echo: all checks passed" at the end; the
// end-to-end tests (test/e2e) look for those lines.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	port := fs.String("port", "echo", `connection port: "name" (own namespace) or "namespace/name"`)
	name := fs.String("name", hostname(), "client, load: the name sent in the connection message")
	size := fs.Int("size", 8<<20, "client: bytes of the section-sized messages")
	retry := fs.Duration("retry", 60*time.Second, "client, load: how long to retry while the server is not yet published")
	hold := fs.Bool("hold", false, "client: after the checks, keep the connection until the server ends it, and check that it reports peer-closed")
	compare := fs.Bool("compare", false, "client: after the checks, run the same calls over kalpc and over gRPC (TCP to the server pod's IP) and print a table")
	grpcAddr := fs.String("grpc-listen", ":9090", "server: TCP address of the gRPC echo service (empty: none)")
	publishDelay := fs.Duration("publish-delay", 0, "server: wait this long before publishing the port (the pod stays unready meanwhile: its sidecar's readiness needs the port published)")
	servers := fs.Int("servers", 2, "load: stop once this many different server pods have answered")
	settle := fs.Duration("settle", 3*time.Second, "load: keep calling this long after the last new server answered")
	interval := fs.Duration("interval", 5*time.Millisecond, "load: pause between calls")
	timeout := fs.Duration("timeout", 4*time.Minute, "load: give up after this long")
	probe := fs.Duration("probe", 200*time.Millisecond, "load: open a fresh connection this often (0: never)")
	probeFailuresOK := fs.Bool("probe-failures-ok", false, "load: count failed fresh connections but do not fail for them (e.g. while the API server is down)")
	_ = fs.Parse(os.Args[2:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch os.Args[1] {
	case "server":
		err = serve(ctx, *port, *grpcAddr, *publishDelay)
	case "client":
		err = client(ctx, clientOptions{port: *port, name: *name, size: *size, retry: *retry, hold: *hold, compare: *compare})
	case "load":
		err = load(ctx, loadOptions{port: *port, name: *name, retry: *retry, servers: *servers, settle: *settle, interval: *interval, timeout: *timeout, probe: *probe, probeFailuresOK: *probeFailuresOK})
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
	fmt.Fprintln(os.Stderr, "usage: k8s-echo server|client|load [-port [namespace/]name] [flags] (-h for the flags)")
	os.Exit(2)
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// netns names this process's network namespace (e.g. "net:[4026532301]").
func netns() string {
	s, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return "unknown: " + err.Error()
	}
	return s
}

// pattern returns n deterministic bytes derived from seed.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	fill(b, seed)
	return b
}

// fill writes pattern(len(b), seed) into b in place.
func fill(b []byte, seed byte) {
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
}
