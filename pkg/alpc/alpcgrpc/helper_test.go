//go:build linux && !kalpc_stub

package alpcgrpc_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"

	"github.com/kalpc/kalpc/pkg/alpc/alpcgrpc"
)

// Tests run servers as separate OS processes by re-executing the test
// binary: TestMain dispatches to a helper when KALPC_TEST_HELPER is set.
const helperEnv = "KALPC_TEST_HELPER"

func TestMain(m *testing.M) {
	// grpc-go's interop cases report failures with grpclog's Fatal, which
	// exits the process; panicking instead lets a test fail properly.
	grpclog.SetLoggerV2(fatalPanicLogger{})
	if name := os.Getenv(helperEnv); name != "" {
		if err := runHelper(name, os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fatalPanic is what a grpclog Fatal call panics with.
type fatalPanic string

type fatalPanicLogger struct{}

func (fatalPanicLogger) Info(...any)                  {}
func (fatalPanicLogger) Infoln(...any)                {}
func (fatalPanicLogger) Infof(string, ...any)         {}
func (fatalPanicLogger) Warning(...any)               {}
func (fatalPanicLogger) Warningln(...any)             {}
func (fatalPanicLogger) Warningf(string, ...any)      {}
func (fatalPanicLogger) Error(...any)                 {}
func (fatalPanicLogger) Errorln(...any)               {}
func (fatalPanicLogger) Errorf(string, ...any)        {}
func (fatalPanicLogger) Fatal(args ...any)            { panic(fatalPanic(fmt.Sprint(args...))) }
func (fatalPanicLogger) Fatalln(args ...any)          { panic(fatalPanic(fmt.Sprintln(args...))) }
func (fatalPanicLogger) Fatalf(f string, args ...any) { panic(fatalPanic(fmt.Sprintf(f, args...))) }
func (fatalPanicLogger) V(int) bool                   { return false }

// runHelper serves interop's TestService (plus health and reflection) on
// arg until stdin closes.
func runHelper(name, arg string) error {
	stop := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(stop)
	}()
	switch name {
	case "compat-server":
		l, err := alpcgrpc.Listen(arg, nil)
		if err != nil {
			return err
		}
		return serveGRPC(l, stop)
	case "unix-server":
		l, err := net.Listen("unix", arg)
		if err != nil {
			return err
		}
		return serveGRPC(l, stop)
	case "hash-server":
		// Native mode with 64 MiB messages and a service that proves what
		// it received: see hashServer.
		srv := alpcgrpc.NewServer(alpcgrpc.MaxRecvMsgSize(64 << 20))
		testgrpc.RegisterTestServiceServer(srv, hashServer{})
		return serveNative(srv, arg, stop)
	case "native-server":
		srv := alpcgrpc.NewServer(alpcgrpc.MaxRecvMsgSize(benchMaxMsg))
		testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
		healthpb.RegisterHealthServer(srv, health.NewServer())
		reflection.Register(srv)
		return serveNative(srv, arg, stop)
	}
	return fmt.Errorf("unknown helper %q", name)
}

// serveNative serves srv's native-mode port at path until stop closes.
func serveNative(srv *alpcgrpc.Server, path string, stop <-chan struct{}) error {
	l, err := srv.Listen(path, nil)
	if err != nil {
		return err
	}
	fmt.Println("READY")
	go func() {
		<-stop
		srv.Stop()
	}()
	return srv.Serve(l)
}

// benchMaxMsg is the servers' receive limit: large enough for the 16 MiB
// benchmark.
const benchMaxMsg = 64 << 20

func serveGRPC(l net.Listener, stop <-chan struct{}) error {
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(benchMaxMsg))
	testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
	healthpb.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)
	fmt.Println("READY")
	go func() {
		<-stop
		srv.Stop()
	}()
	return srv.Serve(l)
}

// helper is a server process started by a test.
type helper struct {
	cmd  *exec.Cmd
	exit chan error
}

// startServer re-executes the test binary as helper name serving at a new
// path, waits for it to be ready and returns the path. The process is
// stopped when the test ends.
func startServer(tb testing.TB, name string) (string, *helper) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "port.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^$", path)
	cmd.Env = append(os.Environ(), helperEnv+"="+name)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	h := &helper{cmd: cmd, exit: make(chan error, 1)}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ready <- sc.Scan() && sc.Text() == "READY"
		for sc.Scan() {
		}
		h.exit <- cmd.Wait()
	}()
	tb.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-h.exit:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-h.exit
		}
	})
	select {
	case ok := <-ready:
		if !ok {
			tb.Fatalf("helper %s did not start", name)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		tb.Fatalf("helper %s did not become ready", name)
	}
	return path, h
}

func (h *helper) kill() { _ = h.cmd.Process.Kill() }

// checkLeaks fails the test if descriptors or goroutines it started are
// still there when it ends.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := countFDs(t)
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		after := countFDs(t)
		for deadline := time.Now().Add(3 * time.Second); after > before && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			after = countFDs(t)
		}
		if after > before {
			t.Errorf("descriptors leaked: %d before, %d after", before, after)
		}
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("goroutines leaked: %v", err)
		}
	})
}

var fdMu sync.Mutex

func countFDs(t testing.TB) int {
	fdMu.Lock()
	defer fdMu.Unlock()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// hashServer's UnaryCall answers with the SHA-256 of the request's payload
// (hex, in Username) and a payload of ResponseSize bytes of pattern.
type hashServer struct {
	testgrpc.UnimplementedTestServiceServer
}

func (hashServer) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	sum := sha256.Sum256(req.GetPayload().GetBody())
	return &testgrpc.SimpleResponse{
		Username: hex.EncodeToString(sum[:]),
		Payload:  &testgrpc.Payload{Body: pattern(int(req.GetResponseSize()), 7)},
	}, nil
}

// pattern returns n bytes that differ with seed and position.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31+i>>8) ^ seed
	}
	return b
}
