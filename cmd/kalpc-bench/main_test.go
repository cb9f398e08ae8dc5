package main

import (
	"bytes"
	"encoding/json"
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

	"github.com/kalpc/kalpc/internal/bench"
)

// The test binary doubles as the command (KALPC_BENCH_TEST_MAIN=1) and as
// the harness's child processes, so the tests exercise the real main:
// flags, signal handling and cleanup.
func TestMain(m *testing.M) {
	if bench.IsChild(os.Args) {
		os.Exit(bench.ChildMain(os.Args))
	}
	if os.Getenv("KALPC_BENCH_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// command returns the command line as an exec.Cmd of the test binary.
func command(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "KALPC_BENCH_TEST_MAIN=1")
	return cmd
}

func TestQuickRunWritesOutputs(t *testing.T) {
	out := t.TempDir()
	doc := filepath.Join(t.TempDir(), "performance.md")
	if err := os.WriteFile(doc, []byte("# P\n"+bench.DocBeginMarker+"\n"+bench.DocEndMarker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := command(t, "-quick", "-sizes", "64,4KiB", "-transports", "copy,raw-seqpacket,kalpc-inline,kalpc-loan",
		"-iterations", "30", "-cell-time", "30ms", "-warmup-time", "10ms", "-out", out, "-plot", "svg", "-update-doc", doc,
		"-cpuprofile", filepath.Join(out, "pprof"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kalpc-bench: %v\n%s", err, stderr.String())
	}
	for _, f := range []string{"results.json", "results.md", "rtt.svg", "pprof/kalpc-inline_64_client.pprof", "pprof/kalpc-inline_64_server.pprof"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	var rep bench.Report
	b, _ := os.ReadFile(filepath.Join(out, "results.json"))
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Schema != bench.SchemaVersion || len(rep.Results) != 8 || !strings.HasPrefix(rep.Command, "kalpc-bench -quick") {
		t.Errorf("report: schema %q, %d results, command %q", rep.Schema, len(rep.Results), rep.Command)
	}
	if !strings.Contains(stdout.String(), "| kalpc inline (Call) | 64 B |") {
		t.Errorf("stdout lacks the table:\n%s", stdout.String())
	}
	d, _ := os.ReadFile(doc)
	if !strings.Contains(string(d), "![Round-trip p50 against payload size, log-log](") || !strings.Contains(string(d), "rtt.svg)") {
		t.Errorf("document not updated:\n%s", d)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-sizes", "0"}, {"-transports", "carrier-pigeon"}, {"-netns", "maybe"}, {"-plot", "gif"}, {"extra"}} {
		cmd := command(t, append(args, "-out", t.TempDir())...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("%v: %v, want a non-zero exit\n%s", args, err, out)
		}
	}
}

// TestSignalCleansUp interrupts a run in the middle of a cell: the command
// must exit promptly and leave no namespace, process or directory behind.
func TestSignalCleansUp(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd, stderr := startLongRun(t)
			pid := cmd.Process.Pid
			kids := waitForChildren(t, pid, stderr)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 130 {
					t.Errorf("exit: %v, want status 130\n%s", err, stderr.String())
				}
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("kalpc-bench did not exit after %v\n%s", sig, stderr.String())
			}
			checkNothingLeft(t, pid, kids)
		})
	}
}

// TestKilledRunIsSwept kills the harness outright: its children must die
// with it, and the next run must delete the namespaces and directory it
// left.
func TestKilledRunIsSwept(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	cmd, stderr := startLongRun(t)
	pid := cmd.Process.Pid
	kids := waitForChildren(t, pid, stderr)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitGone(t, kids)
	if left := owned(pid); len(left) == 0 {
		// Another package's test run may have swept them already (go test
		// runs packages in parallel, and every run sweeps).
		t.Skipf("the SIGKILLed harness's leftovers were already swept\n%s", stderr.String())
	}

	next := command(t, "-transports", "copy", "-sizes", "64", "-iterations", "5", "-cell-time", "10ms", "-warmup-time", "1ms", "-out", t.TempDir())
	out, err := next.CombinedOutput()
	if err != nil {
		t.Fatalf("next run: %v\n%s", err, out)
	}
	if left := owned(pid); len(left) > 0 {
		t.Errorf("still left after the next run: %v", left)
	}
}

// startLongRun starts a run whose first cell takes a minute.
func startLongRun(t *testing.T) (*exec.Cmd, *syncBuf) {
	t.Helper()
	cmd := command(t, "-transports", "kalpc-inline", "-sizes", "64", "-cell-time", "1m", "-iterations", "1000000000", "-warmup-time", "1ms", "-out", t.TempDir())
	stderr := &syncBuf{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, stderr
}

// waitForChildren waits until the harness has its server and client
// processes (the cell is running) and returns their pids.
func waitForChildren(t *testing.T, pid int, stderr *syncBuf) []int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if kids := children(pid); len(kids) >= 2 {
			time.Sleep(200 * time.Millisecond) // into the measured phase
			return kids
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the harness started no cell\n%s", stderr.String())
	return nil
}

// children returns the pids of processes whose parent is pid and that run
// as the harness's children.
func children(pid int) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
		if bytes.Contains(cmdline, []byte(bench.ChildCommand)) {
			n, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			out = append(out, n)
		}
	}
	return out
}

func waitGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Errorf("child process %d outlived the harness", pid)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// owned lists the namespaces and shared directories named after pid.
func owned(pid int) []string {
	var out []string
	ns, _ := filepath.Glob(fmt.Sprintf("/run/netns/kalpcb-%d-*", pid))
	out = append(out, ns...)
	for _, parent := range []string{os.TempDir(), "/tmp"} {
		d, _ := filepath.Glob(filepath.Join(parent, fmt.Sprintf("kalpc-bench-%d-*", pid)))
		out = append(out, d...)
	}
	links, _ := filepath.Glob(fmt.Sprintf("/sys/class/net/kb%d-*", pid))
	return append(out, links...)
}

func checkNothingLeft(t *testing.T, pid int, kids []int) {
	t.Helper()
	for _, k := range kids {
		if alive(k) {
			t.Errorf("child process %d still alive", k)
		}
	}
	if left := owned(pid); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// syncBuf collects a process's stderr for failure messages.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
