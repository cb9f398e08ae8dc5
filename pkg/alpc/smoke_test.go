//go:build linux && !kalpc_stub

package alpc

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

func TestSmokeInProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.sock")
	l, err := Listen(path, &Config{Handler: HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		return append([]byte("echo:"), r.Payload()...), nil
	})})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		r, err := l.Accept(t.Context())
		if err != nil {
			return
		}
		if _, err := r.Accept([]byte("welcome")); err != nil {
			t.Error(err)
		}
	}()
	c, err := Dial(t.Context(), path, []byte("hi"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := string(c.AcceptMessage()); got != "welcome" {
		t.Fatalf("accept message %q", got)
	}
	out, err := c.Call(t.Context(), []byte("x"))
	if err != nil || !bytes.Equal(out, []byte("echo:x")) {
		t.Fatalf("call: %q %v", out, err)
	}
}
