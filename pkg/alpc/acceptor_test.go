//go:build linux && !kalpc_stub

package alpc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConnRequestAnsweredOnce: a request from a Listener is answered
// exactly once; a reply too large leaves it unanswered (so it can still be
// answered); its Peer is the client process, with no broker identity.
func TestConnRequestAnsweredOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.sock")
	var a Acceptor
	a, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Name() != path {
		t.Errorf("Name() = %q, want the socket path %q", a.Name(), path)
	}
	dialed := make(chan error, 1)
	go func() {
		c, err := Dial(t.Context(), path, []byte("hi"), nil)
		if err == nil {
			_ = c.Close()
		}
		dialed <- err
	}()
	req, err := a.Accept(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if req.Peer.Identity != nil || req.Peer.Credentials == nil || req.Peer.Credentials.PID != int32(os.Getpid()) {
		t.Fatalf("Peer = %+v; want this process's credentials and no identity", req.Peer)
	}
	if s := req.Peer.String(); !strings.HasPrefix(s, "pid ") {
		t.Errorf("Peer.String() = %q, want the process credentials", s)
	}
	if _, err := req.Accept(make([]byte, MaxConnectionMessage+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Accept with an oversized reply = %v, want ErrTooLarge", err)
	}
	conn, err := req.Accept([]byte("ok"))
	if err != nil {
		t.Fatalf("Accept after a refused reply: %v", err)
	}
	defer conn.Close()
	if _, err := req.Accept(nil); err == nil {
		t.Error("a second Accept succeeded")
	}
	if err := req.Reject("late"); err == nil {
		t.Error("Reject after Accept succeeded")
	}
	if err := <-dialed; err != nil {
		t.Fatalf("Dial: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Accept(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Accept after Close = %v, want ErrClosed", err)
	}
}

// TestConnRequestZero: a ConnRequest not taken from an Acceptor fails with
// an error, never a panic.
func TestConnRequestZero(t *testing.T) {
	var r ConnRequest
	if _, err := r.Accept(nil); err == nil {
		t.Error("Accept on a zero ConnRequest succeeded")
	}
	if err := r.Reject("no"); err == nil {
		t.Error("Reject on a zero ConnRequest succeeded")
	}
	if s := (Peer{}).String(); s == "" {
		t.Error("empty Peer.String")
	}
}
