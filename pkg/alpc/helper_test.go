//go:build linux && !kalpc_stub

package alpc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
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
	case "server-direct":
		err = helperServer(arg, &Config{AllowDirectAccess: true})
	case "server-payload":
		err = helperPayloadServer(arg)
	case "server-big-window":
		err = helperServer(arg, &Config{MaxPendingCalls: 10000, MaxConcurrentHandlers: 10000})
	case "fileconn":
		err = helperFileConn()
	case "blaster":
		err = helperBlaster(arg)
	case "chaos-client":
		err = helperChaosClient(arg)
	case "raw-echo":
		err = helperRawEcho(arg)
	default:
		if f, ok := hostileHelpers[name]; ok {
			err = f(arg)
		} else {
			err = fmt.Errorf("unknown helper %q", name)
		}
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
//
// and the binary verbs of bulkHandler.
func testHandler(notes chan<- string) Handler {
	return HandlerFunc(func(ctx context.Context, req *Request) ([]byte, error) {
		if out, ok, err := bulkHandler(ctx, req); ok {
			return out, err
		}
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
	if cfg.Handler == nil {
		cfg.Handler = testHandler(nil)
	}
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
		c, err := r.Accept(fmt.Appendf(nil, "welcome pid=%d uid=%d", r.Peer.Credentials.PID, r.Peer.Credentials.UID))
		if err != nil {
			return err
		}
		conns = append(conns, c)
		go func() {
			<-c.Done()
			if err := c.Err(); !errors.Is(err, ErrPeerClosed) && !errors.Is(err, ErrClosed) {
				fmt.Fprintln(os.Stderr, "helper server: connection ended:", err)
			}
		}()
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

// bulkHandler serves the verbs used with large payloads, reading the
// payload without converting it to a string:
//
//	sha:<bytes>     reply with the SHA-256 of the bytes (read through a View)
//	gen:<n>         reply with pattern(n)
//	loan-gen:<n>    reply with pattern(n) through Request.ReplyLoan
//	loan-fail:<n>   set an n-byte reply loan, then fail
//	loan-both:<n>   set an n-byte reply loan and also return bytes (misuse)
//	cb-sha:<n>      call the peer with sha:pattern(n) and reply "ok" if its hash matches
func bulkHandler(ctx context.Context, req *Request) ([]byte, bool, error) {
	v := req.View()
	defer v.Release()
	b := v.Bytes()
	switch {
	case bytes.HasPrefix(b, []byte("sha:")):
		sum := sha256.Sum256(b[4:])
		return sum[:], true, nil
	case bytes.HasPrefix(b, []byte("len:")):
		// Zero-copy receive: the payload is only looked at in place.
		return binary.LittleEndian.AppendUint64(nil, uint64(len(b))), true, nil
	case bytes.HasPrefix(b, []byte("copy:")):
		// Default receive: a private copy of the payload.
		out := append([]byte(nil), b...)
		return binary.LittleEndian.AppendUint64(nil, uint64(len(out))), true, nil
	case bytes.HasPrefix(b, []byte("gen:")):
		n, _ := strconv.Atoi(string(b[4:]))
		return pattern(n), true, nil
	case bytes.HasPrefix(b, []byte("loan-gen:")), bytes.HasPrefix(b, []byte("loan-fail:")), bytes.HasPrefix(b, []byte("loan-both:")):
		// Reply with pattern(n) written into a reply loan; loan-fail sets the
		// loan and then fails, loan-both sets it and also returns bytes.
		verb, arg, _ := bytes.Cut(b, []byte(":"))
		n, _ := strconv.Atoi(string(arg))
		l, err := req.Conn().Loan(ctx, n)
		if err != nil {
			return nil, true, err
		}
		if string(verb) == "loan-gen" {
			copy(l.Bytes(), pattern(n))
		}
		if err := req.ReplyLoan(l); err != nil {
			l.Release()
			return nil, true, err
		}
		switch string(verb) {
		case "loan-fail":
			return nil, true, Errorf(CodeUnavailable, "failed after setting a reply loan")
		case "loan-both":
			return []byte("both"), true, nil
		}
		return nil, true, nil
	case bytes.HasPrefix(b, []byte("region-sha:")):
		id, _ := strconv.ParseUint(string(b[11:]), 10, 64)
		rr, err := req.Conn().Region(id)
		if err != nil {
			return nil, true, err
		}
		buf := make([]byte, rr.Len())
		if _, err := rr.ReadAt(buf, 0); err != nil {
			return nil, true, err
		}
		sum := sha256.Sum256(buf)
		return sum[:], true, nil
	case bytes.HasPrefix(b, []byte("region-write:")):
		idText, text, _ := bytes.Cut(b[13:], []byte(":"))
		id, _ := strconv.ParseUint(string(idText), 10, 64)
		rr, err := req.Conn().Region(id)
		if err != nil {
			return nil, true, err
		}
		_, err = rr.WriteAt(text, 0)
		return nil, true, err
	case bytes.HasPrefix(b, []byte("cb-sha:")):
		n, _ := strconv.Atoi(string(b[7:]))
		data := append([]byte("sha:"), pattern(n)...)
		got, err := req.Conn().Call(ctx, data)
		if err != nil {
			return nil, true, err
		}
		want := sha256.Sum256(data[4:])
		if !bytes.Equal(got, want[:]) {
			return []byte("mismatch"), true, nil
		}
		return []byte("ok"), true, nil
	}
	return nil, false, nil
}

// pattern returns n deterministic, position-dependent bytes. Large
// patterns tile a 1 MiB block stamped with its index (fast under -race).
func pattern(n int) []byte {
	const block = 1 << 20
	if n > block {
		base := pattern(block)
		b := make([]byte, n)
		for k := 0; k*block < n; k++ {
			chunk := b[k*block : min((k+1)*block, n)]
			copy(chunk, base)
			if len(chunk) >= 8 {
				binary.LittleEndian.PutUint64(chunk, uint64(k))
			}
		}
		return b
	}
	b := make([]byte, n)
	i := 0
	for ; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], uint64(i)*0x9E3779B97F4A7C15)
	}
	for ; i < n; i++ {
		b[i] = byte(i * 31)
	}
	return b
}

// helperBlaster dials path and calls sha: with 64 MiB payloads until
// killed. It writes them straight into loans, so that little else than the
// section is mapped: a killed process's memory is freed before the kernel
// closes its sockets, and the test measures how fast the peer notices.
func helperBlaster(path string) error {
	c, err := Dial(context.Background(), path, nil, nil)
	if err != nil {
		return err
	}
	fmt.Println("READY")
	block := pattern(1 << 20)
	for {
		l, err := c.Loan(context.Background(), 4+64<<20)
		if err != nil {
			return err
		}
		b := l.Bytes()
		for off := 4; off < len(b); off += len(block) {
			copy(b[off:], block)
		}
		copy(b, "sha:")
		if _, err := c.CallLoan(context.Background(), l); err != nil {
			return err
		}
	}
}

// helperChaosClient dials path and runs a random mix of calls, one-way
// messages, section transfers and loans on several goroutines until killed.
func helperChaosClient(path string) error {
	c, err := Dial(context.Background(), path, []byte("chaos"), &Config{Handler: testHandler(nil)})
	if err != nil {
		return err
	}
	fmt.Println("READY")
	errs := make(chan error, 4)
	for w := range 4 {
		go func() { errs <- chaosOps(context.Background(), c, int64(w)) }()
	}
	return <-errs
}

// chaosOps runs random operations on c until one fails.
func chaosOps(ctx context.Context, c *Conn, seed int64) error {
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(os.Getpid())))
	for {
		var err error
		switch rng.IntN(6) {
		case 0:
			_, err = c.Call(ctx, []byte("echo:x"))
		case 1:
			_, err = c.Call(ctx, append([]byte("sha:"), make([]byte, rng.IntN(8<<20))...))
		case 2:
			_, err = c.Call(ctx, fmt.Appendf(nil, "gen:%d", rng.IntN(4<<20)))
		case 3:
			var l *Loan
			if l, err = c.Loan(ctx, 4+rng.IntN(4<<20)); err == nil {
				copy(l.Bytes(), "len:")
				_, err = c.CallLoan(ctx, l)
			}
		case 4:
			err = c.Send(ctx, append([]byte("sha:"), make([]byte, rng.IntN(1<<20))...))
		case 5:
			_, err = c.Call(ctx, []byte("chain:3"))
		}
		if err != nil {
			return err
		}
	}
}
