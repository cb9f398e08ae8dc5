//go:build linux && !kalpc_stub

package alpc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestAcceptAndReject(t *testing.T) {
	checkLeaks(t)
	path, h := startServer(t, "server")

	t.Run("accept", func(t *testing.T) {
		c, err := Dial(t.Context(), path, []byte("hello"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		want := fmt.Sprintf("welcome pid=%d uid=%d", os.Getpid(), os.Getuid())
		if diff := cmp.Diff(want, string(c.AcceptMessage())); diff != "" {
			t.Errorf("accept message (-want +got):\n%s", diff)
		}
		if got := c.PeerCredentials().PID; int(got) != h.cmd.Process.Pid {
			t.Errorf("peer pid = %d, want server pid %d", got, h.cmd.Process.Pid)
		}
		out, err := c.Call(t.Context(), []byte("echo:ping"))
		if err != nil || string(out) != "ping" {
			t.Fatalf("Call = %q, %v; want ping", out, err)
		}
	})
	t.Run("reject", func(t *testing.T) {
		c, err := Dial(t.Context(), path, []byte("reject-me"), nil)
		if err == nil {
			c.Close()
			t.Fatal("Dial succeeded; want rejection")
		}
		var re *RejectError
		if !errors.As(err, &re) || !errors.Is(err, ErrRejected) {
			t.Fatalf("Dial error = %v; want *RejectError", err)
		}
		if want := fmt.Sprintf("rejected by pid %d", h.cmd.Process.Pid); re.Reason != want {
			t.Errorf("reason = %q, want %q", re.Reason, want)
		}
	})
	t.Run("no port", func(t *testing.T) {
		_, err := Dial(t.Context(), path+".missing", nil, nil)
		if err == nil || !strings.Contains(err.Error(), "no connection port is listening") {
			t.Fatalf("Dial error = %v; want a clear no-port error", err)
		}
	})
	t.Run("message too large", func(t *testing.T) {
		_, err := Dial(t.Context(), path, make([]byte, MaxConnectionMessage+1), nil)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Dial error = %v; want ErrTooLarge", err)
		}
	})
}

func TestConcurrentCalls(t *testing.T) {
	checkLeaks(t)
	path, _ := startServer(t, "server-big-window")
	const n = 10000
	c, err := Dial(t.Context(), path, nil, &Config{MaxPendingCalls: n})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Limits().MaxPendingCalls; got != n {
		t.Fatalf("negotiated MaxPendingCalls = %d, want %d", got, n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			want := fmt.Sprintf("call-%d", i)
			out, err := c.Call(t.Context(), []byte("echo:"+want))
			if err != nil {
				errs <- err
			} else if string(out) != want {
				errs <- fmt.Errorf("call %d got reply %q", i, out)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestNestedCallbacks(t *testing.T) {
	checkLeaks(t)
	path, _ := startServer(t, "server")
	c, err := Dial(t.Context(), path, nil, &Config{Handler: testHandler(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// chain:6 goes client → server → client → ... six levels deep; each
	// side is blocked in a Call while serving the next level.
	out, err := c.Call(t.Context(), []byte("chain:6"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("leaf<1<2<3<4<5<6", string(out)); diff != "" {
		t.Errorf("chain reply (-want +got):\n%s", diff)
	}
	// Many chains at once.
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if out, err := c.Call(t.Context(), []byte("chain:4")); err != nil || string(out) != "leaf<1<2<3<4" {
				t.Errorf("concurrent chain = %q, %v", out, err)
			}
		})
	}
	wg.Wait()
}

func TestCancellationReachesPeer(t *testing.T) {
	checkLeaks(t)
	path, _ := startServer(t, "server")
	notes := make(chan string, 10)
	c, err := Dial(t.Context(), path, nil, &Config{Handler: testHandler(notes)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		_, err := c.Call(ctx, []byte("wait"))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Call error = %v; want context.Canceled", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("cancelled Call returned after %v", d)
		}
		select {
		case note := <-notes:
			if diff := cmp.Diff("ctx-done:context canceled:deadline=false", note); diff != "" {
				t.Errorf("peer handler saw (-want +got):\n%s", diff)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("peer handler's context was not cancelled")
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := c.Call(ctx, []byte("wait"))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Call error = %v; want context.DeadlineExceeded", err)
		}
		select {
		case note := <-notes:
			if diff := cmp.Diff("ctx-done:context deadline exceeded:deadline=true", note); diff != "" {
				t.Errorf("peer handler saw (-want +got):\n%s", diff)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("peer handler's deadline did not pass")
		}
	})
	// The connection is still healthy and every slot came back.
	for range c.Limits().MaxPendingCalls + 1 {
		if _, err := c.Call(t.Context(), []byte("echo:x")); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHandlerErrors(t *testing.T) {
	checkLeaks(t)
	path, _ := startServer(t, "server")
	c, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tests := []struct {
		payload string
		want    *RemoteError
	}{
		{"fail:8:go away", &RemoteError{Code: CodePermissionDenied, Message: "go away"}},
		{"fail:6:bad", &RemoteError{Code: CodeInvalidArgument, Message: "bad"}},
		{"panic", &RemoteError{Code: CodeInternal, Message: "handler panicked: test panic"}},
		{"nope", &RemoteError{Code: CodeInvalidArgument, Message: `unknown verb "nope"`}},
	}
	for _, tt := range tests {
		t.Run(tt.payload, func(t *testing.T) {
			_, err := c.Call(t.Context(), []byte(tt.payload))
			var re *RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("Call error = %v; want *RemoteError", err)
			}
			if diff := cmp.Diff(tt.want, re); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("no handler", func(t *testing.T) {
		// The client has no handler: a callback into it is unimplemented.
		_, err := c.Call(t.Context(), []byte("chain:1"))
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != CodeUnimplemented {
			t.Fatalf("Call error = %v; want the peer's unimplemented error relayed", err)
		}
	})
}

func TestPeerKilledMidCall(t *testing.T) {
	checkLeaks(t)
	path, h := startServer(t, "server")
	c, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const calls = 100
	errs := make(chan error, calls)
	for range calls {
		go func() {
			_, err := c.Call(context.Background(), []byte("wait"))
			errs <- err
		}()
	}
	// Let the calls reach the server.
	time.Sleep(200 * time.Millisecond)
	killed := time.Now()
	h.kill()
	for range calls {
		if err := <-errs; !errors.Is(err, ErrPeerClosed) {
			t.Errorf("Call error = %v; want ErrPeerClosed", err)
		}
	}
	// Promptly, not at some timeout (the calls have none); 1 s leaves room
	// for a loaded -race run waking 100 goroutines.
	if d := time.Since(killed); d > time.Second {
		t.Errorf("pending calls failed %v after kill -9; want within 1s", d)
	}
	select {
	case <-c.Done():
	case <-time.After(time.Second):
		t.Fatal("Conn.Done not closed after the peer died")
	}
	if !errors.Is(c.Err(), ErrPeerClosed) {
		t.Errorf("Conn.Err() = %v; want ErrPeerClosed", c.Err())
	}
	if _, err := c.Call(t.Context(), []byte("echo:x")); !errors.Is(err, ErrPeerClosed) {
		t.Errorf("Call after peer death = %v; want ErrPeerClosed", err)
	}
}

func TestFileConn(t *testing.T) {
	checkLeaks(t)
	a, b, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	startHelper(t, "fileconn", "", b)
	b.Close()
	c, err := FileConn(t.Context(), a, &Config{Handler: testHandler(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, err := c.Call(t.Context(), []byte("chain:3"))
	if err != nil || string(out) != "leaf<1<2<3" {
		t.Fatalf("Call = %q, %v", out, err)
	}
}

func TestLocalLimits(t *testing.T) {
	checkLeaks(t)
	path, _ := startServer(t, "server")
	c, err := Dial(t.Context(), path, nil, &Config{MaxPendingCalls: 2, InlineLimit: 1024, MaxMessageSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, want := c.Limits(), (Limits{InlineLimit: 1024, MaxMessageSize: 1 << 20, MaxPendingCalls: 2, MaxSectionBytes: DefaultMaxSectionBytes}); got != want {
		t.Errorf("Limits() = %+v, want %+v", got, want)
	}
	if _, err := c.Call(t.Context(), make([]byte, 1<<20+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized Call error = %v; want ErrTooLarge", err)
	}
	// Two calls occupy the window; a third waits and times out with a LimitError.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { _, _ = c.Call(ctx, []byte("wait")) })
	}
	time.Sleep(100 * time.Millisecond)
	tctx, tcancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	_, err = c.Call(tctx, []byte("echo:x"))
	tcancel()
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "MaxPendingCalls" || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("third Call error = %v; want a MaxPendingCalls LimitError wrapping DeadlineExceeded", err)
	}
	cancel()
	wg.Wait()
	// Slots come back once the peer answers the cancelled calls.
	deadline, dcancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer dcancel()
	if out, err := c.Call(deadline, []byte("echo:ok")); err != nil || string(out) != "ok" {
		t.Fatalf("Call after cancellations = %q, %v", out, err)
	}
}

func TestOneWayFlowControl(t *testing.T) {
	checkLeaks(t)
	notes := make(chan string)
	l, path := listenTest(t, &Config{Handler: testHandler(notes), MaxConcurrentHandlers: 1})
	go acceptAll(t, l)
	c, err := Dial(t.Context(), path, nil, &Config{MaxPendingCalls: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Nobody reads notes yet: the handler blocks, four sends fill the window
	// and the fifth waits for credit.
	for i := range 4 {
		if err := c.Send(t.Context(), fmt.Appendf(nil, "note:%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	err = c.Send(ctx, []byte("note:4"))
	cancel()
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("fifth Send error = %v; want ErrLimit", err)
	}
	for i := range 4 {
		if got := <-notes; got != fmt.Sprint(i) {
			t.Fatalf("note %d = %q (one-way messages must be handled in order with one handler)", i, got)
		}
	}
	// Credits returned: sending works again.
	const more = 20
	received := make(chan struct{})
	go func() {
		defer close(received)
		for range more {
			<-notes
		}
	}()
	for i := range more {
		if err := c.Send(t.Context(), fmt.Appendf(nil, "note:%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	<-received
}
