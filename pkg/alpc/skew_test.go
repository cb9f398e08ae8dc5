//go:build linux && !kalpc_stub

package alpc_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kalpc/kalpc/internal/skew"
	"github.com/kalpc/kalpc/internal/skew/peer"
	"github.com/kalpc/kalpc/pkg/alpc"
)

// TestVersionSkew runs the library of the previous release
// (skew.PreviousRelease, built from git in the test) against this one, in
// both directions: an old client against a new server and a new client
// against an old server. On each connection both ends run peer.Script
// against the other (inline and 1 MiB section calls and replies, callbacks,
// one-way messages, a loan, a read-write grant, a remote error), so every
// request travels old to new and new to old; the connection must then end
// without a protocol error. Everything is bounded by timeouts.
//
// It skips when git or the commit is missing, unless KALPC_REQUIRE_SKEW=1
// (CI) makes that a failure. `make test-skew` runs it with the sidecar's.
func TestVersionSkew(t *testing.T) {
	start := time.Now()
	tree := skew.Tree(t)
	skew.CopyCurrent(t, tree, "internal/skew/peer")
	old := skew.Build(t, tree, "./internal/skew/peer/kalpc-skew-peer")
	t.Cleanup(func() { t.Logf("version-skew test took %v in all", time.Since(start).Round(time.Millisecond)) })

	t.Run("old client, new server", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		sock := filepath.Join(t.TempDir(), "port.sock")
		l, err := alpc.Listen(sock, peer.Config(t.Logf))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		accepted := make(chan *alpc.Conn, 1)
		go func() {
			defer close(accepted)
			req, err := l.Accept(ctx)
			if err != nil {
				t.Errorf("accept: %v", err)
				return
			}
			if string(req.Message) != peer.ClientMessage {
				t.Errorf("connection message %q, want %q", req.Message, peer.ClientMessage)
			}
			c, err := req.Accept([]byte(peer.AcceptMessage))
			if err != nil {
				t.Errorf("accept: %v", err)
				return
			}
			accepted <- c
		}()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, old, "client", "-socket", sock, "-timeout", "50s")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err = cmd.Run()
		t.Logf("old client's log:\n%s", stderr.Bytes())
		if err != nil || stdout.String() != "ok\n" {
			t.Fatalf("old client: %v, stdout %q", err, stdout.Bytes())
		}
		c, ok := <-accepted
		if !ok {
			t.Fatal("the old client's connection was not accepted")
		}
		waitEnded(t, c)
	})

	t.Run("new client, old server", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		sock := filepath.Join(t.TempDir(), "port.sock")
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, old, "server", "-socket", sock)
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		listening := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Scan()
			listening <- sc.Text()
			for sc.Scan() {
			}
			exited <- cmd.Wait()
		}()
		defer func() {
			_ = cmd.Process.Kill()
			<-exited
		}()
		select {
		case line := <-listening:
			if line != "listening" {
				_ = cmd.Process.Kill()
				err := <-exited
				exited <- err
				t.Fatalf("old server did not start (%v): %q\n%s", err, line, stderr.Bytes())
			}
		case <-ctx.Done():
			t.Fatal("old server did not start within a minute")
		}

		c, err := alpc.Dial(ctx, sock, []byte(peer.ClientMessage), peer.Config(t.Logf))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(c.AcceptMessage()); got != peer.AcceptMessage {
			t.Errorf("accept message %q, want %q", got, peer.AcceptMessage)
		}
		if err := peer.Script(ctx, c, t.Logf); err != nil {
			t.Errorf("new client towards the old server: %v", err)
		}
		got, err := c.Call(ctx, []byte("script:"))
		if err != nil || string(got) != peer.ScriptOK {
			t.Errorf("old server towards the new client: %q, %v", got, err)
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			exited <- err
			if err != nil {
				t.Errorf("old server exited with %v", err)
			}
		case <-ctx.Done():
			t.Error("old server did not exit on SIGTERM")
		}
		t.Logf("old server's log:\n%s", stderr.Bytes())
		if strings.Contains(stderr.String(), "protocol") {
			t.Errorf("old server logged a protocol error")
		}
	})
}

// waitEnded waits for c to end after its peer exited and checks that it
// ended because the peer went away, not with a protocol error.
func waitEnded(t *testing.T, c *alpc.Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection still open 10s after its peer exited")
	}
	var pe *alpc.ProtocolError
	if err := c.Err(); errors.As(err, &pe) || !errors.Is(err, alpc.ErrPeerClosed) {
		t.Errorf("connection ended with %v, want the peer closed", err)
	}
	_ = c.Close()
}
