// Package exampletest runs an example's server and clients as separate
// processes in its tests: the test binary re-executes itself as the
// example program (see Main), so the processes run exactly the example's
// main, race-instrumented when the test is.
package exampletest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// envMain tells a re-executed test binary to run the example's main.
const envMain = "KALPC_EXAMPLE_MAIN"

// Main runs the example's main instead of the tests in a process started
// by Start; call it from TestMain.
func Main(m *testing.M, main func()) {
	if os.Getenv(envMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Socket returns a fresh socket path for a port.
func Socket(t *testing.T) string {
	return filepath.Join(t.TempDir(), "port.sock")
}

// Process is a running example process.
type Process struct {
	cmd  *exec.Cmd
	out  *buffer
	done chan struct{}
	err  error
}

// Start starts the example with args (for example "server", "-socket",
// path) as a separate process, without a kalpc sidecar. The process is
// killed at the end of the test if still running.
func Start(t *testing.T, args ...string) *Process {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{cmd: exec.Command(self, args...), out: &buffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, alpc.EnvSocket+"=") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, envMain+"=1")
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of %q:\n%s", args, p.out.String())
		}
	})
	return p
}

// Run runs the example with args to completion (at most timeout) and
// returns its output and exit error.
func Run(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	return Start(t, args...).Wait(t, timeout)
}

// Wait waits at most timeout for the process to exit and returns its
// output and exit error.
func (p *Process) Wait(t *testing.T, timeout time.Duration) (string, error) {
	t.Helper()
	select {
	case <-p.done:
		return p.out.String(), p.err
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%q did not exit within %v; output:\n%s", p.cmd.Args[1:], timeout, p.out.String())
		return "", nil
	}
}

// Stop sends SIGTERM, as Kubernetes does, and waits for the exit.
func (p *Process) Stop(t *testing.T) (string, error) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	return p.Wait(t, 10*time.Second)
}

// WaitFor waits at most timeout until the output contains s.
func (p *Process) WaitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.out.String(), s) {
		select {
		case <-p.done:
			t.Fatalf("%q exited (%v) before printing %q; output:\n%s", p.cmd.Args[1:], p.err, s, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q did not print %q within %v; output:\n%s", p.cmd.Args[1:], s, timeout, p.out.String())
		}
	}
}

// Contains fails the test for each of want missing from out.
func Contains(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q; output:\n%s", w, out)
		}
	}
}

// buffer is a bytes.Buffer safe for the process's writes and the test's
// reads.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
