//go:build linux && !kalpc_stub

package alpc

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestDialWaitForServer: with WaitForServer, Dial waits for a listener to
// appear at the path instead of failing with ErrNoPort, and gives up when
// its context ends, with an error matching both.
func TestDialWaitForServer(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "late.sock")

	if _, err := Dial(t.Context(), path, nil, nil); !errors.Is(err, ErrNoPort) {
		t.Fatalf("Dial without a listener = %v; want ErrNoPort at once", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, path, nil, &Config{WaitForServer: true})
	if !errors.Is(err, ErrNoPort) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting Dial without a listener = %v; want ErrNoPort and DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("waiting Dial gave up after %v, before its deadline", d)
	}

	type result struct {
		c   *Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		c, err := Dial(ctx, path, []byte("patient"), &Config{WaitForServer: true})
		done <- result{c, err}
	}()
	time.Sleep(100 * time.Millisecond)
	l, err := Listen(path, &Config{Handler: testHandler(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	req, err := l.Accept(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if string(req.Message) != "patient" {
		t.Fatalf("connection message %q", req.Message)
	}
	sc, err := req.Accept([]byte("welcome"))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	r := <-done
	if r.err != nil {
		t.Fatalf("waiting Dial = %v", r.err)
	}
	defer r.c.Close()
	if string(r.c.AcceptMessage()) != "welcome" {
		t.Fatalf("accept message %q", r.c.AcceptMessage())
	}
}

// TestWaitForServerDoesNotRetryRejections: only "no server" is waited
// out; a server's rejection ends a waiting Dial at once.
func TestWaitForServerDoesNotRetryRejections(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "strict.sock")
	l, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			req, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			_ = req.Reject("no")
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = Dial(ctx, path, nil, &Config{WaitForServer: true})
	var rej *RejectError
	if !errors.As(err, &rej) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting Dial to a rejecting server = %v; want the RejectError", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the rejection took %v: it was retried", d)
	}
}
