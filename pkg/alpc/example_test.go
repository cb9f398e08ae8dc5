//go:build linux && !kalpc_stub

package alpc_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// A server publishes a port, a client connects, calls, and is called back.
func Example() {
	dir, _ := os.MkdirTemp("", "alpc-example")
	defer os.RemoveAll(dir)
	port := filepath.Join(dir, "greeter.sock")
	ctx := context.Background()

	l, err := alpc.Listen(port, &alpc.Config{
		Handler: alpc.HandlerFunc(func(ctx context.Context, req *alpc.Request) ([]byte, error) {
			// Call back into the client before answering.
			name, err := req.Conn().Call(ctx, []byte("name?"))
			if err != nil {
				return nil, err
			}
			return fmt.Appendf(nil, "%s, %s", req.Payload(), name), nil
		}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	go func() {
		req, err := l.Accept(ctx)
		if err != nil {
			return
		}
		conn, err := req.Accept([]byte("welcome " + string(req.Message)))
		if err != nil {
			return
		}
		<-conn.Done()
		conn.Close()
	}()

	conn, err := alpc.Dial(ctx, port, []byte("gopher"), &alpc.Config{
		Handler: alpc.HandlerFunc(func(ctx context.Context, req *alpc.Request) ([]byte, error) {
			return []byte("gopher"), nil
		}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	fmt.Println(string(conn.AcceptMessage()))
	reply, err := conn.Call(ctx, []byte("hello"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(reply))
	// Output:
	// welcome gopher
	// hello, gopher
}

// A server rejects a connection; the client sees the reason.
func ExampleConnRequest_Reject() {
	dir, _ := os.MkdirTemp("", "alpc-example")
	defer os.RemoveAll(dir)
	port := filepath.Join(dir, "strict.sock")
	l, err := alpc.Listen(port, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	go func() {
		req, err := l.Accept(context.Background())
		if err == nil {
			_ = req.Reject("not on the guest list")
		}
	}()
	_, err = alpc.Dial(context.Background(), port, []byte("stranger"), nil)
	var re *alpc.RejectError
	if errors.As(err, &re) {
		fmt.Println("rejected:", re.Reason)
	}
	// Output: rejected: not on the guest list
}

// serveGuests serves either kind of port: a Listener (a socket path) or a
// Port (published through the kalpc sidecar in a pod). It accepts clients
// whose connection message is "guest" and says who each one is.
func serveGuests(ctx context.Context, port alpc.Acceptor) {
	for {
		req, err := port.Accept(ctx)
		if err != nil {
			return // ErrClosed after port.Close, or ctx ended
		}
		if string(req.Message) != "guest" {
			_ = req.Reject("guests only")
			continue
		}
		who := "an unknown process"
		switch {
		case req.Peer.Identity != nil: // a Port: the pod, verified by the brokers
			who = "pod " + req.Peer.Identity.Namespace + "/" + req.Peer.Identity.PodName
		case req.Peer.Credentials != nil: // a Listener: the process, as the kernel reports it
			who = fmt.Sprintf("uid %d", req.Peer.Credentials.UID)
		}
		if _, err := req.Accept([]byte("welcome, " + who)); err != nil {
			continue
		}
	}
}

// One serving loop for both kinds of port: here a Listener; in a pod with
// the kalpc sidecar, alpc.Publish's Port goes to the same function.
func ExampleAcceptor() {
	dir, _ := os.MkdirTemp("", "alpc-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "guests.sock")
	var port alpc.Acceptor
	port, err := alpc.Listen(path, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer port.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go serveGuests(ctx, port)

	conn, err := alpc.Dial(ctx, path, []byte("guest"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	fmt.Println(string(conn.AcceptMessage()) == fmt.Sprintf("welcome, uid %d", os.Getuid()))
	// Output: true
}
