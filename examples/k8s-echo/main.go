// Command k8s-echo is kalpc's echo example for Kubernetes: a server pod
// publishes a connection port through its kalpc sidecar (alpc.Publish) and a
// client pod connects to it (alpc.Connect). They exchange an inline message,
// a section-sized message in each direction (shared memory), and a callback
// from the server into the client, each verified by content; and they prove
// they live in different network namespaces.
//
//	k8s-echo server -port echo             # publish port "echo" in the pod's namespace
//	k8s-echo client -port apps/echo        # connect, run the checks, exit 0 if all pass
//	k8s-echo client -port apps/echo -hold  # then wait for the server to go: peer-closed
//
// The manifests in this directory run both with the sidecar injected
// (make demo-cluster runs them on a local cluster). The client prints one
// "PASS" or "FAIL" line per check and "k8s-echo: all checks passed" at the
// end; the end-to-end tests look for those lines.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc"
)

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	port := fs.String("port", "echo", `connection port: "name" (own namespace) or "namespace/name"`)
	name := fs.String("name", hostname(), "client: the name sent in the connection message")
	size := fs.Int("size", 8<<20, "client: bytes of the section-sized messages")
	retry := fs.Duration("retry", 60*time.Second, "client: how long to retry while the server is not yet published")
	hold := fs.Bool("hold", false, "client: after the checks, keep the connection until the server ends it, and check that it reports peer-closed")
	_ = fs.Parse(os.Args[2:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch os.Args[1] {
	case "server":
		err = serve(ctx, *port)
	case "client":
		err = client(ctx, *port, *name, *size, *retry, *hold)
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
	fmt.Fprintln(os.Stderr, "usage: k8s-echo server|client [-port [namespace/]name] [-name client-name] [-size bytes]")
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
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

// serve publishes the port and answers:
//
//	"ping"           → "pong from <pod>"
//	"netns"          → the server's network namespace
//	"shout:<text>"   → calls back into the client ("who are you?") first
//	"blob:<n>"       → n pattern bytes (a section-sized reply)
//	anything larger  → "sha256:<hex> len:<n>" of the payload
func serve(ctx context.Context, port string) error {
	handler := alpc.HandlerFunc(func(ctx context.Context, req *alpc.Request) ([]byte, error) {
		p := req.Payload()
		msg := string(p)
		switch {
		case msg == "ping":
			return []byte("pong from " + hostname()), nil
		case msg == "netns":
			return []byte(netns()), nil
		case strings.HasPrefix(msg, "shout:"):
			who, err := req.Conn().Call(ctx, []byte("who are you?"))
			if err != nil {
				return nil, fmt.Errorf("callback failed: %w", err)
			}
			return fmt.Appendf(nil, "%s, %s!", strings.ToUpper(strings.TrimPrefix(msg, "shout:")), who), nil
		case strings.HasPrefix(msg, "blob:"):
			n, err := strconv.Atoi(strings.TrimPrefix(msg, "blob:"))
			if err != nil || n < 0 || n > 64<<20 {
				return nil, fmt.Errorf("bad blob size %q", msg)
			}
			return pattern(n, 0x5a), nil
		default:
			sum := sha256.Sum256(p)
			return fmt.Appendf(nil, "sha256:%s len:%d", hex.EncodeToString(sum[:]), len(p)), nil
		}
	})
	l, err := alpc.Publish(ctx, port, &alpc.Config{Handler: handler})
	if err != nil {
		return fmt.Errorf("publish %s: %w", port, err)
	}
	defer l.Close()
	log.Printf("server: pod %s published port %s (policy %+v) from %s", hostname(), port, l.Policy(), netns())
	for {
		req, err := l.Accept(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		name := string(req.Message)
		if name == "mallory" {
			log.Printf("server: rejecting %q from %s", name, req.Peer)
			_ = req.Reject("mallory is not welcome here")
			continue
		}
		conn, err := req.Accept(fmt.Appendf(nil, "hello %s, I am %s", name, hostname()))
		if err != nil {
			log.Printf("server: accept: %v", err)
			continue
		}
		log.Printf("server: accepted %q from verified peer %s", name, req.Peer)
		go func() {
			<-conn.Done()
			log.Printf("server: %q disconnected (%v)", name, conn.Err())
			_ = conn.Close()
		}()
	}
}

func client(ctx context.Context, port, name string, size int, retry time.Duration, hold bool) error {
	cfg := &alpc.Config{Handler: alpc.HandlerFunc(func(ctx context.Context, req *alpc.Request) ([]byte, error) {
		log.Printf("client: server called back: %q", req.Payload())
		return []byte(name), nil
	})}
	var conn *alpc.Conn
	deadline := time.Now().Add(retry)
	for {
		var err error
		conn, err = alpc.Connect(ctx, port, []byte(name), cfg)
		if err == nil {
			break
		}
		// The server pod may not have published yet.
		retryable := errors.Is(err, alpc.ErrNoServer) || errors.Is(err, alpc.ErrBrokerUnavailable)
		if !retryable || time.Now().After(deadline) {
			return fmt.Errorf("connect %s: %w", port, err)
		}
		log.Printf("client: %v; retrying", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	defer conn.Close()
	log.Printf("client: pod %s connected to %s; server said %q", hostname(), port, conn.AcceptMessage())

	failed := 0
	check := func(what string, ok bool, detail string) {
		status := "PASS"
		if !ok {
			status = "FAIL"
			failed++
		}
		log.Printf("%s %s: %s", status, what, detail)
	}

	// Inline: a small message copied through the socket queue.
	out, err := conn.Call(ctx, []byte("ping"))
	check("inline", err == nil && strings.HasPrefix(string(out), "pong from "), fmt.Sprintf("call(ping) = %q, err %v", out, err))

	// Section: a large request goes into a sealed memfd; the server hashes it.
	big := pattern(size, 0xa5)
	sum := sha256.Sum256(big)
	want := fmt.Sprintf("sha256:%s len:%d", hex.EncodeToString(sum[:]), size)
	start := time.Now()
	out, err = conn.Call(ctx, big)
	check("section request", err == nil && string(out) == want,
		fmt.Sprintf("sent %d B, server hashed %q (want %q) in %v, err %v", size, out, want, time.Since(start).Round(time.Microsecond), err))

	// Section: a large reply, checked byte for byte.
	start = time.Now()
	out, err = conn.Call(ctx, fmt.Appendf(nil, "blob:%d", size))
	check("section reply", err == nil && bytes.Equal(out, pattern(size, 0x5a)),
		fmt.Sprintf("received %d B (want %d) in %v, err %v", len(out), size, time.Since(start).Round(time.Microsecond), err))

	// Callback: the server calls the client while the client's call waits.
	out, err = conn.Call(ctx, []byte("shout:hello kalpc"))
	wantShout := "HELLO KALPC, " + name + "!"
	check("callback", err == nil && string(out) == wantShout, fmt.Sprintf("call(shout) = %q (want %q), err %v", out, wantShout, err))

	// Separate network namespaces: nothing here goes through a network.
	out, err = conn.Call(ctx, []byte("netns"))
	mine := netns()
	check("separate network namespaces", err == nil && len(out) > 0 && string(out) != mine,
		fmt.Sprintf("server %q, client %q, err %v", out, mine, err))

	// Round trips.
	const n = 2000
	payload := make([]byte, 64)
	start = time.Now()
	for range n {
		if _, err := conn.Call(ctx, payload); err != nil {
			return err
		}
	}
	el := time.Since(start)
	log.Printf("client: %d round trips of 64 B in %v (%.1f µs each)", n, el.Round(time.Millisecond), float64(el.Microseconds())/n)

	if failed > 0 {
		return fmt.Errorf("k8s-echo: %d checks failed", failed)
	}
	log.Printf("k8s-echo: all checks passed")
	if hold {
		log.Printf("client: holding the connection until the server ends it")
		select {
		case <-conn.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
		err := conn.Err()
		check("peer closed", errors.Is(err, alpc.ErrPeerClosed), fmt.Sprint(err))
		if failed > 0 {
			return errors.New("k8s-echo: the connection did not end with peer-closed")
		}
	}
	return nil
}
