//go:build linux && !kalpc_stub

package alpc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
)

func listenTest(t *testing.T, cfg *Config) (*Listener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "port.sock")
	l, err := Listen(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

// acceptAll accepts every request until the listener closes, closing the
// connections when the test ends.
func acceptAll(t *testing.T, l *Listener) {
	var conns []*Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for {
		r, err := l.Accept(context.Background())
		if err != nil {
			return
		}
		c, err := r.Accept(nil)
		if err != nil {
			t.Error(err)
			return
		}
		conns = append(conns, c)
	}
}

func TestListenPortFile(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "port.sock")

	t.Run("mode", func(t *testing.T) {
		l, err := Listen(path, &Config{SocketMode: 0o660})
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o660 {
			t.Errorf("socket mode = %v, want socket 0660", st.Mode())
		}
		t.Run("in use", func(t *testing.T) {
			if _, err := Listen(path, nil); !errors.Is(err, ErrPortInUse) {
				t.Fatalf("second Listen error = %v; want ErrPortInUse", err)
			}
		})
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); !errors.Is(err, ErrClosed) {
			t.Errorf("second Close = %v; want ErrClosed", err)
		}
		for _, p := range []string{path, path + ".lock"} {
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s still exists after Close (err %v)", p, err)
			}
		}
	})
	t.Run("stale socket replaced", func(t *testing.T) {
		// A socket left behind by a process that died without cleaning up.
		fd, err := sys.SeqpacketSocket(false)
		if err != nil {
			t.Fatal(err)
		}
		if err := sys.Bind(fd, path); err != nil {
			t.Fatal(err)
		}
		sys.Close(fd)
		l, err := Listen(path, nil)
		if err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		go acceptAll(t, l)
		c, err := Dial(t.Context(), path, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		l.Close()
	})
	t.Run("regular file kept", func(t *testing.T) {
		if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(path, nil); err == nil {
			t.Fatal("Listen replaced a regular file")
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
			t.Fatalf("regular file damaged: %q, %v", b, err)
		}
		os.Remove(path)
	})
	t.Run("accept after close", func(t *testing.T) {
		l, err := Listen(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		if _, err := l.Accept(t.Context()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Accept after Close = %v; want ErrClosed", err)
		}
	})
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{InlineLimit: 10},
		{InlineLimit: MaxInlineLimit + 1},
		{InlineLimit: 4096, MaxMessageSize: 100},
		{MaxPendingCalls: -1},
		{SocketMode: os.ModeDir | 0o600},
	} {
		if _, err := Listen(filepath.Join(t.TempDir(), "p"), &cfg); err == nil {
			t.Errorf("Listen accepted invalid config %+v", cfg)
		}
	}
}
