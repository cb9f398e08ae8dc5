//go:build linux && !kalpc_stub

package alpcgrpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/kalpc/kalpc/pkg/alpc"
	"github.com/kalpc/kalpc/pkg/alpc/alpcgrpc"
)

// TestStreamConn runs golang.org/x/net/nettest's conformance suite for
// net.Conn (I/O, deadlines, Close, concurrent use) on a connection made by
// Listen and Dialer.
func TestStreamConn(t *testing.T) {
	checkLeaks(t)
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		path := filepath.Join(t.TempDir(), "conn.sock")
		l, err := alpcgrpc.Listen(path, nil)
		if err != nil {
			return nil, nil, nil, err
		}
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}()
		var d alpcgrpc.Dialer
		c1, err = d.DialContext(context.Background(), path)
		if err != nil {
			_ = l.Close()
			return nil, nil, nil, err
		}
		c2 = <-accepted
		stop = func() {
			_ = c1.Close()
			_ = c2.Close()
			_ = l.Close()
		}
		return c1, c2, stop, nil
	})
}

// TestStreamConnEOF checks that bytes written before Close all arrive and
// are followed by io.EOF, and that a dead peer ends reads with io.EOF.
func TestStreamConnEOF(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "conn.sock")
	l, err := alpcgrpc.Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Dial returns once the server accepts (the kalpc handshake), so accept
	// concurrently.
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := l.Accept()
		ch <- accepted{c, err}
	}()
	var d alpcgrpc.Dialer
	c1, err := d.DialContext(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		t.Fatal(a.err)
	}
	c2 := a.c
	defer c2.Close()
	want := make([]byte, 3<<20) // more than the read buffer and the kalpc window
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		_, _ = c1.Write(want)
		_ = c1.Close()
	}()
	got, err := io.ReadAll(c2)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if len(got) != len(want) || string(got) != string(want) {
		t.Fatalf("read %d bytes, want %d identical bytes", len(got), len(want))
	}
	if _, err := c2.Write([]byte("x")); err == nil {
		t.Error("Write to a closed peer succeeded")
	}
}

// TestDialNoPort checks the error for a path where nothing listens, and
// the opt-in fallback.
func TestDialNoPort(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.sock")
	var d alpcgrpc.Dialer
	if _, err := d.DialContext(t.Context(), path); !errors.Is(err, alpcgrpc.ErrNoPort) {
		t.Fatalf("DialContext = %v, want ErrNoPort", err)
	}
	fallback := errors.New("fallback called")
	d.Fallback = func(ctx context.Context, addr string) (net.Conn, error) { return nil, fallback }
	if _, err := d.DialContext(t.Context(), path); !errors.Is(err, fallback) {
		t.Fatalf("DialContext with fallback = %v, want the fallback's error", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	cc, err := alpcgrpc.NewClient(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := cc.Connect(ctx); !errors.Is(err, alpcgrpc.ErrNoPort) {
		t.Fatalf("Connect = %v, want ErrNoPort", err)
	}
}

// TestBrokerNoSidecar checks that every brokered entry point reports a
// missing broker (no KALPC_SOCKET) as alpc.ErrNoBroker, and that the
// clients do not take it for a missing port (no fallback).
func TestBrokerNoSidecar(t *testing.T) {
	t.Setenv(alpc.EnvSocket, "")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()

	if _, err := alpcgrpc.Publish(ctx, "greeter", nil); !errors.Is(err, alpc.ErrNoBroker) {
		t.Errorf("Publish = %v, want ErrNoBroker", err)
	}
	if _, err := alpcgrpc.NewServer().Publish(ctx, "greeter", nil); !errors.Is(err, alpc.ErrNoBroker) {
		t.Errorf("Server.Publish = %v, want ErrNoBroker", err)
	}
	if _, err := alpcgrpc.NewServer().Publish(ctx, "greeter", &alpc.Config{Handler: alpc.HandlerFunc(nil)}); err == nil {
		t.Error("Server.Publish with a Handler succeeded")
	}

	fallback := errors.New("fallback called")
	d := alpcgrpc.Dialer{Broker: true, Fallback: func(context.Context, string) (net.Conn, error) { return nil, fallback }}
	if _, err := d.DialContext(ctx, "apps/greeter"); !errors.Is(err, alpc.ErrNoBroker) || errors.Is(err, fallback) {
		t.Errorf("brokered DialContext = %v, want ErrNoBroker and no fallback", err)
	}
	cc, err := alpcgrpc.NewClient("apps/greeter", alpcgrpc.WithBroker())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := cc.Connect(ctx); !errors.Is(err, alpc.ErrNoBroker) || errors.Is(err, alpcgrpc.ErrNoPort) {
		t.Errorf("brokered Connect = %v, want ErrNoBroker, not ErrNoPort", err)
	}
}
