package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a server or client process of one cell, started by the harness.
type child struct {
	role   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan event
	stderr *syncBuffer
	waited chan struct{}
	err    error // from Wait, valid once waited is closed
}

// spawn starts exe as a child in network namespace ns ("" for the current
// one). The child runs in its own process group (an interrupt aimed at the
// harness does not reach it; the harness ends it) and is killed by the
// kernel if the harness dies (PR_SET_PDEATHSIG).
func spawn(exe, ns string, spec *childSpec) (*child, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	argv := []string{exe, ChildCommand, string(b)}
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = childEnv(os.Environ())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c := &child{role: spec.Role, cmd: cmd, stdin: stdin, events: make(chan event, 4), stderr: &syncBuffer{}, waited: make(chan struct{})}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start %s process: %w", spec.Role, err)
	}
	go func() {
		// Wait only after stdout reached EOF, so that no event is lost
		// (exec.Cmd.Wait closes the pipe).
		defer func() {
			c.err = cmd.Wait()
			close(c.waited)
		}()
		defer close(c.events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = event{Event: evError, Error: fmt.Sprintf("unreadable event %q", sc.Text())}
			}
			c.events <- ev
		}
	}()
	return c, nil
}

// childEnv is the harness's environment, except that a binary built with
// the race detector (go test -race) does not sleep a second on exit.
func childEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	gorace := "atexit_sleep_ms=0"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GORACE="); ok {
			gorace = strings.TrimSpace(v + " " + gorace)
			continue
		}
		out = append(out, kv)
	}
	return append(out, "GORACE="+gorace)
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// send writes a command to the child.
func (c *child) send(cmd string) error {
	if err := writeLine(c.stdin, command{Cmd: cmd}); err != nil {
		return fmt.Errorf("failed to send %q to the %s process: %w%s", cmd, c.role, err, c.stderrTail())
	}
	return nil
}

// expect waits up to timeout for the child's next event and returns it if
// it is of kind want. An "unavailable" event is returned as an
// *UnavailableError, an "error" event or an early exit as an error.
func (c *child) expect(ctx context.Context, want string, timeout time.Duration) (event, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case ev, ok := <-c.events:
		if !ok {
			<-c.waited
			return event{}, fmt.Errorf("%s process exited (%w) before sending %q%s", c.role, c.err, want, c.stderrTail())
		}
		switch ev.Event {
		case want:
			return ev, nil
		case evUnavailable:
			return ev, &UnavailableError{Reason: ev.Reason}
		case evError:
			return ev, fmt.Errorf("%s process: %s", c.role, ev.Error)
		}
		return ev, fmt.Errorf("%s process sent %q, want %q", c.role, ev.Event, want)
	case <-t.C:
		return event{}, fmt.Errorf("%s process sent no %q within %v%s", c.role, want, timeout, c.stderrTail())
	case <-ctx.Done():
		return event{}, ctx.Err()
	}
}

// stop ends the child: it closes stdin (the child's signal to exit), waits
// up to grace, then kills the child's process group. It always reaps the
// child.
func (c *child) stop(grace time.Duration) {
	_ = c.stdin.Close()
	go func() {
		for range c.events { // events nobody asked for
		}
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.waited:
	case <-t.C:
	}
	select {
	case <-c.waited:
		// Reaped: its pid (and group id) may already belong to another
		// process, so it is not signalled.
	default:
		_ = killGroup(c.cmd.Process.Pid)
		<-c.waited
	}
}

func (c *child) stderrTail() string {
	s := strings.TrimSpace(c.stderr.String())
	if s == "" {
		return ""
	}
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return "; its stderr: " + s
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 1<<20 {
		return len(p), nil // keep memory bounded; the head says enough
	}
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// isZombie reports whether pid has exited but not been reaped.
func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// The state follows the parenthesised command name, which may itself
	// contain spaces or parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] == 'Z'
}
