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
