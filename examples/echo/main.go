// Command echo is kalpc's first example: a server publishes a connection
// port, a client connects with a connection message, calls the server, and
// the server calls back into the client while answering. Large payloads
// travel through shared memory, and a client named "mallory" is rejected.
//
// On one machine (no Kubernetes), the port is a socket path:
//
//	echo server -socket /tmp/kalpc-echo.sock    # publish the port and serve
//	echo client -socket /tmp/kalpc-echo.sock    # connect, call, get a callback
//	echo demo                                   # both, as separate processes
//
// In a pod with the kalpc sidecar (KALPC_SOCKET set), the same commands
// publish and connect to a ConnectionPort by name instead (-port); see
// echo.yaml and README.md.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
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
	port := fs.String("port", "echo", `with the kalpc sidecar (KALPC_SOCKET set): the ConnectionPort, "name" or "namespace/name"`)
	socket := fs.String("socket", filepath.Join(os.TempDir(), "kalpc-echo.sock"), "without the sidecar: the port's socket path")
	name := fs.String("name", "demo-client", "client: the name sent in the connection message")
	wait := fs.Duration("wait", 30*time.Second, "client: how long to wait for the server to publish the port")
	_ = fs.Parse(os.Args[2:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch os.Args[1] {
	case "server":
		err = serve(ctx, *port, *socket)
	case "client":
		err = client(ctx, *port, *socket, *name, *wait)
	case "demo":
		err = demo(ctx)
	default:
		usage()
	}
	if err != nil {
		stop()
		log.Fatalf("%s: %v", os.Args[1], err)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: echo server|client|demo [-socket path | -port [namespace/]name] [-name client-name]")
	os.Exit(2)
}

// serve publishes the port and answers calls. Connection messages are client
// names; the name "mallory" is rejected. For "shout:<text>" the server first
// calls back into the client ("who are you?") before answering.
func serve(ctx context.Context, port, socket string) error {
	handler := alpc.HandlerFunc(func(ctx context.Context, req *alpc.Request) ([]byte, error) {
		// Look at the payload in place first: large ones stay in the
		// client's shared-memory section.
		v := req.View()
		defer v.Release()
		if bytes.HasPrefix(v.Bytes(), []byte("len:")) {
			return fmt.Appendf(nil, "%d bytes", v.Len()), nil
		}
		if v.Len() > 1<<10 {
			return req.Payload(), nil // echo large payloads (a private copy)
		}
		msg := string(req.Payload())
		if text, ok := strings.CutPrefix(msg, "shout:"); ok {
			// A callback: ask the client something while its call waits.
			who, err := req.Conn().Call(ctx, []byte("who are you?"))
			if err != nil {
				return nil, fmt.Errorf("callback failed: %w", err)
			}
			return fmt.Appendf(nil, "%s, %s!", strings.ToUpper(text), who), nil
		}
		return []byte(msg), nil
	})
	l, err := listen(ctx, port, socket, &alpc.Config{Handler: handler})
	if err != nil {
		return err
	}
	defer l.Close()
	log.Printf("server: pid %d published %s", os.Getpid(), describe(l))
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
			log.Printf("server: rejecting %q (%s)", name, req.Peer)
			_ = req.Reject("mallory is not welcome here")
			continue
		}
		conn, err := req.Accept(fmt.Appendf(nil, "hello %s, I am pid %d", name, os.Getpid()))
		if err != nil {
			log.Printf("server: accept: %v", err)
			continue
		}
		log.Printf("server: accepted %q from %s", name, req.Peer)
		go func() {
			<-conn.Done()
			log.Printf("server: %q disconnected (%v)", name, conn.Err())
			_ = conn.Close()
		}()
	}
}

func client(ctx context.Context, port, socket string, name string, wait time.Duration) error {
	cfg := &alpc.Config{Handler: alpc.HandlerFunc(func(ctx context.Context, req *alpc.Request) ([]byte, error) {
		log.Printf("client: server called back: %q", req.Payload())
		return []byte(name), nil
	})}
	conn, via, err := connect(ctx, port, socket, []byte(name), cfg, wait)
	var rejected *alpc.RejectError
	if errors.As(err, &rejected) {
		return fmt.Errorf("%s was rejected by the server: %s", name, rejected.Reason)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	log.Printf("client: connected to %s; server said %q", via, conn.AcceptMessage())

	out, err := conn.Call(ctx, []byte("ping"))
	if err != nil {
		return err
	}
	log.Printf("client: call(ping) = %q", out)

	out, err = conn.Call(ctx, []byte("shout:hello kalpc"))
	if err != nil {
		return err
	}
	log.Printf("client: call(shout) = %q", out)

	const n = 10000
	payload := make([]byte, 64)
	start := time.Now()
	for range n {
		if _, err := conn.Call(ctx, payload); err != nil {
			return err
		}
	}
	log.Printf("client: %d round trips of 64 B in %v (%.1f µs each), copied through the socket", n, time.Since(start).Round(time.Millisecond), float64(time.Since(start).Microseconds())/n)

	// Above the inline limit the same Call places the payload in a sealed
	// shared-memory section: only its offset and length cross the socket.
	big := make([]byte, 16<<20)
	for i := range big {
		big[i] = byte(i)
	}
	start = time.Now()
	out, err = conn.Call(ctx, big)
	if err != nil {
		return err
	}
	if !bytes.Equal(out, big) {
		return errors.New("16 MiB echo came back different")
	}
	log.Printf("client: 16 MiB echoed through shared-memory sections in %v, content verified", time.Since(start).Round(time.Microsecond))

	// A loan skips even the copy into the section: write in place, send.
	loan, err := conn.Loan(ctx, 16<<20)
	if err != nil {
		return err
	}
	copy(loan.Bytes(), "len:")
	start = time.Now()
	out, err = conn.CallLoan(ctx, loan) // the loan now belongs to the server
	if err != nil {
		return err
	}
	log.Printf("client: 16 MiB loan sent without a copy and read in place by the server (%s) in %v", out, time.Since(start).Round(time.Microsecond))
	return nil
}

// demo runs the server and two clients as separate processes on this
// machine, always through a socket path (never through a sidecar).
func demo(ctx context.Context) error {
	if err := os.Unsetenv(alpc.EnvSocket); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "kalpc-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	port := filepath.Join(dir, "echo.sock")
	self, err := os.Executable()
	if err != nil {
		return err
	}
	server := exec.CommandContext(ctx, self, "server", "-socket", port)
	server.Stdout, server.Stderr = os.Stdout, os.Stderr
	if err := server.Start(); err != nil {
		return err
	}
	defer func() {
		_ = server.Process.Signal(syscall.SIGTERM)
		_ = server.Wait()
	}()
	for i := 0; ; i++ {
		if _, err := os.Stat(port); err == nil {
			break
		}
		if i == 100 {
			return errors.New("server did not publish its port")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, name := range []string{"alice", "mallory"} {
		c := exec.CommandContext(ctx, self, "client", "-socket", port, "-name", name)
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		if err := c.Run(); err != nil && name != "mallory" {
			return fmt.Errorf("client %s: %w", name, err)
		}
	}
	log.Printf("demo: done; two processes talked through kalpc (no network stack involved)")
	return nil
}

// listen publishes the port: in a pod with the kalpc sidecar, the declared
// ConnectionPort port through the sidecar (alpc.Publish); elsewhere a
// socket at path socket (alpc.Listen). Either is an alpc.Acceptor, served
// the same way; cfg.Handler serves every accepted connection's requests.
func listen(ctx context.Context, port, socket string, cfg *alpc.Config) (alpc.Acceptor, error) {
	if os.Getenv(alpc.EnvSocket) != "" {
		return alpc.Publish(ctx, port, cfg)
	}
	return alpc.Listen(socket, cfg)
}

// describe says how clients reach the port, for the log.
func describe(a alpc.Acceptor) string {
	if _, brokered := a.(*alpc.Port); brokered {
		return "port " + a.Name() + " (through the kalpc sidecar)"
	}
	return "socket " + a.Name()
}

// connect connects to the port: through the kalpc sidecar by
// ConnectionPort name (alpc.Connect) in a pod that has one, else at its
// socket path (alpc.Dial). With Config.WaitForServer it waits up to wait
// for a server (a pod that has not published yet, or a process that has
// not started listening), so client and server may start in any order. It
// also says which way it went, for the log.
func connect(ctx context.Context, port, socket string, msg []byte, cfg *alpc.Config, wait time.Duration) (*alpc.Conn, string, error) {
	var c alpc.Config
	if cfg != nil {
		c = *cfg
	}
	c.WaitForServer = true
	ctx, cancel := context.WithTimeout(ctx, wait) // bounds the handshake only
	defer cancel()
	if os.Getenv(alpc.EnvSocket) != "" {
		conn, err := alpc.Connect(ctx, port, msg, &c)
		return conn, "port " + port + " (through the kalpc sidecar)", err
	}
	conn, err := alpc.Dial(ctx, socket, msg, &c)
	return conn, "socket " + socket, err
}
