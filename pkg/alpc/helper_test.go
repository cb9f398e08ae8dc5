package alpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Tests run servers and clients as separate OS processes by re-executing the
// test binary: TestMain dispatches to a helper when KALPC_TEST_HELPER is set.

const helperEnv = "KALPC_TEST_HELPER"

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runHelper(name, os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

func runHelper(name, arg string) int {
	var err error
	switch name {
	case "server":
		err = helperServer(arg, nil)
	case "server-big-window":
		err = helperServer(arg, &Config{MaxPendingCalls: 10000, MaxConcurrentHandlers: 10000})
	case "fileconn":
		err = helperFileConn()
	case "raw-echo":
		err = helperRawEcho(arg)
	default:
		err = fmt.Errorf("unknown helper %q", name)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

// testHandler is the handler both test processes use. Payloads are
// "verb:argument" commands:
//
//	echo:x          reply x
//	chain:n         call the peer with chain:n-1, reply with its reply + "<n"; chain:0 replies "leaf"
//	wait            block until ctx ends, then Send the peer "ctx-done:<ctx.Err()>" and return ctx.Err()
//	fail:code:msg   return Errorf(code, msg)
//	panic           panic
//	big:n           reply with n bytes
//	note:x          (one-way) record x for the test via notes
func testHandler(notes chan<- string) Handler {
	return HandlerFunc(func(ctx context.Context, req *Request) ([]byte, error) {
		verb, arg, _ := strings.Cut(string(req.Payload()), ":")
		switch verb {
		case "echo":
			return []byte(arg), nil
		case "chain":
			n, _ := strconv.Atoi(arg)
			if n == 0 {
				return []byte("leaf"), nil
			}
			out, err := req.Conn().Call(ctx, fmt.Appendf(nil, "chain:%d", n-1))
			if err != nil {
				return nil, err
			}
			return fmt.Appendf(out, "<%d", n), nil
		case "wait":
			dl, hasDeadline := ctx.Deadline()
			<-ctx.Done()
			msg := fmt.Sprintf("ctx-done:%v:deadline=%v", ctx.Err(), hasDeadline && !dl.IsZero())
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = req.Conn().Send(sctx, []byte("note:"+msg))
			return nil, ctx.Err()
		case "fail":
			code, msg, _ := strings.Cut(arg, ":")
			c, _ := strconv.Atoi(code)
			return nil, Errorf(Code(c), "%s", msg)
		case "panic":
			panic("test panic")
		case "big":
			n, _ := strconv.Atoi(arg)
			return make([]byte, n), nil
		case "note":
			if notes != nil {
				select {
				case notes <- arg:
				case <-ctx.Done():
				}
			}
			return nil, nil
		}
		return nil, Errorf(CodeInvalidArgument, "unknown verb %q", verb)
	})
}

// helperServer listens on path and accepts every client except those whose
// connection message is "reject-me". It prints READY once listening and
// runs until killed or stdin closes.
func helperServer(path string, cfg *Config) error {
	if cfg == nil {
		cfg = &Config{}
	}
	cfg.Handler = testHandler(nil)
	l, err := Listen(path, cfg)
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		// The parent closes our stdin to ask for a clean exit.
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		_ = l.Close()
	}()
	fmt.Println("READY")
	var conns []*Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for {
		r, err := l.Accept(context.Background())
		if errors.Is(err, ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		if string(r.Message) == "reject-me" {
			_ = r.Reject(fmt.Sprintf("rejected by pid %d", os.Getpid()))
			continue
		}
		c, err := r.Accept(fmt.Appendf(nil, "welcome pid=%d uid=%d", r.Credentials.PID, r.Credentials.UID))
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
}

// helperFileConn serves on the channel inherited as fd 3.
func helperFileConn() error {
	f := os.NewFile(3, "channel")
	// The parent starts its side of the handshake once we are ready.
	fmt.Println("READY")
	c, err := FileConn(context.Background(), f, &Config{Handler: testHandler(nil)})
	_ = f.Close()
	if err != nil {
		return err
	}
	<-c.Done()
	return nil
}

// helper is a child process started by a test.
type helper struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
	exit  chan error
}

// startHelper re-executes the test binary as helper name with arg and waits
// for it to print READY. The process is killed when the test ends.
func startHelper(t testing.TB, name, arg string, extra ...*os.File) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", arg)
	cmd.Env = append(os.Environ(), helperEnv+"="+name)
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = extra
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin, exit: make(chan error, 1)}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() && sc.Text() == "READY" {
			ready <- nil
		} else {
			ready <- fmt.Errorf("helper %s did not start: %v", name, sc.Err())
		}
		for sc.Scan() {
		}
		h.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-h.exit:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-h.exit
		}
	})
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("helper %s did not become ready", name)
	}
	return h
}

func (h *helper) kill() { _ = h.cmd.Process.Signal(syscall.SIGKILL) }

// startServer runs a helper server in another process and returns its port path.
func startServer(t testing.TB, name string) (string, *helper) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "port.sock")
	return path, startHelper(t, name, path)
}

// checkLeaks records the process's open descriptors and goroutines, and
// fails the test if either grew when it ends.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := openFDs(t)
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		var after map[string]string
		deadline := time.Now().Add(3 * time.Second)
		for {
			after = openFDs(t)
			if len(after) <= len(before) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(after) > len(before) {
			var leaked []string
			for fd, target := range after {
				if _, ok := before[fd]; !ok {
					leaked = append(leaked, fd+" -> "+target)
				}
			}
			t.Errorf("descriptors leaked: %d before, %d after: %v", len(before), len(after), leaked)
		}
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("goroutines leaked: %v", err)
		}
	})
}

var fdMu sync.Mutex

func openFDs(t testing.TB) map[string]string {
	fdMu.Lock()
	defer fdMu.Unlock()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(entries))
	for _, e := range entries {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out[e.Name()] = target
	}
	// ReadDir's own descriptor was open while listing.
	return out
}
