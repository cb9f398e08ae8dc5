// Command kalpc-skew-peer is the far end of the library version-skew test
// (pkg/alpc/skew_test.go), built from the previous release's tree with the
// current package peer copied into it:
//
//	kalpc-skew-peer server -socket P   # listen at P, print "listening", serve peer.Handler until SIGTERM
//	kalpc-skew-peer client -socket P   # connect to P, run peer.Script, ask for script:, print "ok"
//
// With -port [namespace/]name instead of -socket, it publishes or connects
// to that ConnectionPort through its pod's sidecar (KALPC_SOCKET), as
// cmd/sidecar's version-skew test runs it: an application of the previous
// release served by this tree's sidecars.
//
// Every step is logged to stderr; a failure exits 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kalpc/kalpc/internal/skew/peer"
	"github.com/kalpc/kalpc/pkg/alpc"
)

func main() {
	log.SetFlags(log.Lmicroseconds)
	if len(os.Args) < 2 {
		log.Fatal("usage: kalpc-skew-peer server|client -socket path")
	}
	if err := run(os.Args[1], os.Args[2:]); err != nil {
		log.Fatalf("%s: %v", os.Args[1], err)
	}
}

func run(mode string, args []string) error {
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	socket := fs.String("socket", "", "the port's socket path")
	port := fs.String("port", "", "instead of -socket: the ConnectionPort, through the pod's sidecar")
	timeout := fs.Duration("timeout", time.Minute, "client: bound on the whole run")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch mode {
	case "server":
		return server(ctx, *socket, *port)
	case "client":
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return client(ctx, *socket, *port)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

func server(ctx context.Context, socket, port string) error {
	var l alpc.Acceptor
	var err error
	if port != "" {
		l, err = alpc.Publish(ctx, port, peer.Config(log.Printf))
	} else {
		l, err = alpc.Listen(socket, peer.Config(log.Printf))
	}
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("listening")
	for {
		req, err := l.Accept(ctx)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		if err != nil {
			return err
		}
		if string(req.Message) != peer.ClientMessage {
			_ = req.Reject(fmt.Sprintf("want connection message %q", peer.ClientMessage))
			continue
		}
		c, err := req.Accept([]byte(peer.AcceptMessage))
		if err != nil {
			log.Printf("server: accept: %v", err)
			continue
		}
		go func() {
			<-c.Done()
			_ = c.Close()
		}()
	}
}

func client(ctx context.Context, socket, port string) error {
	var c *alpc.Conn
	var err error
	if port != "" {
		c, err = alpc.Connect(ctx, port, []byte(peer.ClientMessage), peer.Config(log.Printf))
	} else {
		c, err = alpc.Dial(ctx, socket, []byte(peer.ClientMessage), peer.Config(log.Printf))
	}
	if err != nil {
		return err
	}
	defer c.Close()
	if got := string(c.AcceptMessage()); got != peer.AcceptMessage {
		return fmt.Errorf("accept message %q, want %q", got, peer.AcceptMessage)
	}
	if err := peer.Script(ctx, c, log.Printf); err != nil {
		return err
	}
	got, err := c.Call(ctx, []byte("script:"))
	if err != nil {
		return err
	}
	if string(got) != peer.ScriptOK {
		return fmt.Errorf("script: got %q", got)
	}
	fmt.Println("ok")
	return nil
}
