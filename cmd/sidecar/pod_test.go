package main

// This file is the "pod" side of the process tests: the test binary
// re-executed in its own network namespace runs a pod's sidecar (the real
// binary) and plays the pod's application, driven by line commands on stdin.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/pkg/alpc"
	"github.com/kalpc/kalpc/pkg/alpc/alpcmetrics"
)

// Environment of a pod process.
const (
	envRole       = "KALPC_TEST_ROLE"
	envPodDir     = "KALPC_TEST_POD_DIR"
	envSidecarBin = "KALPC_TEST_SIDECAR"
	envAPISocket  = "KALPC_TEST_API_SOCKET"
	envAPIPort    = "KALPC_TEST_API_PORT"
	envNodeDir    = "KALPC_TEST_NODE_DIR"
	// envSidecarArgs holds more sidecar flags, one per line.
	envSidecarArgs = "KALPC_TEST_SIDECAR_ARGS"
)

type podApp struct {
	dir     string
	sidecar *exec.Cmd
	out     *json.Encoder

	mu       sync.Mutex
	conns    []*alpc.Conn
	incoming []map[string]string
	port     *alpc.Port
	publish  context.CancelFunc
	deaf     []*net.UnixConn // control connections of publish-deaf
	portEnd  string          // why a publish-within port ended
}

// runPod is the main function of a pod process.
func runPod() error {
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	if err := proxyAPI(); err != nil {
		return err
	}
	if err := exposeMetrics(); err != nil {
		return err
	}
	p := &podApp{dir: os.Getenv(envPodDir), out: json.NewEncoder(os.Stdout)}
	if err := p.startSidecar(); err != nil {
		return err
	}
	defer p.stopSidecar(syscall.SIGTERM)
	_ = p.out.Encode(map[string]any{"ok": true, "ready": true, "pid": os.Getpid()})
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		res := p.do(strings.Fields(sc.Text()))
		if err := p.out.Encode(res); err != nil {
			return err
		}
	}
	return nil
}

// loopbackUp brings up lo in the fresh network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// proxyAPI makes the API server reachable at the same 127.0.0.1 port inside
// this network namespace, through a Unix socket the test process serves:
// the pod's only route to the API server, as a pod's network is in a cluster.
func proxyAPI() error {
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv(envAPIPort))
	if err != nil {
		return fmt.Errorf("API proxy: %w", err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("unix", os.Getenv(envAPISocket))
				if err != nil {
					return
				}
				defer u.Close()
				splice(c, u)
			}()
		}
	}()
	return nil
}

// exposeMetrics makes the sidecar's metrics server (127.0.0.1:15981 in this
// network namespace) reachable by the test process through the Unix socket
// metrics.sock in the pod directory, the way the API server's pods/proxy
// reaches a pod's port in a cluster.
func exposeMetrics() error {
	ln, err := net.Listen("unix", os.Getenv(envPodDir)+"/metrics.sock")
	if err != nil {
		return fmt.Errorf("metrics proxy: %w", err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				t, err := net.Dial("tcp", "127.0.0.1:15981")
				if err != nil {
					return
				}
				defer t.Close()
				splice(c, t)
			}()
		}
	}()
	return nil
}

func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(a, b); done <- struct{}{} }()
	go func() { _, _ = io.Copy(b, a); done <- struct{}{} }()
	<-done
}

func (p *podApp) startSidecar() error {
	logf, err := os.OpenFile(p.dir+"/sidecar.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{
		"--pod-socket=" + p.dir + "/kalpc.sock",
		"--node-dir=" + os.Getenv(envNodeDir),
		"--token-file=" + p.dir + "/token",
		"--health-addr=127.0.0.1:15980",
		"--metrics-addr=127.0.0.1:15981",
		"--log-level=debug",
		"--kubeconfig=" + p.dir + "/kubeconfig",
	}
	if extra := os.Getenv(envSidecarArgs); extra != "" {
		for _, a := range strings.Split(extra, "\n") {
			args = append(args, strings.ReplaceAll(a, "{dir}", p.dir))
		}
	}
	cmd := exec.Command(os.Getenv(envSidecarBin), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.sidecar = cmd
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://127.0.0.1:15980/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("sidecar not ready within 30s")
}

func (p *podApp) stopSidecar(sig syscall.Signal) {
	if p.sidecar == nil {
		return
	}
	_ = p.sidecar.Process.Signal(sig)
	_ = p.sidecar.Wait()
	p.sidecar = nil
}

func errResult(err error) map[string]any {
	kind := "other"
	for k, e := range map[string]error{
		"port_not_found": alpc.ErrPortNotFound, "not_server": alpc.ErrNotServer, "denied": alpc.ErrAccessDenied,
		"unauthenticated": alpc.ErrUnauthenticated, "no_server": alpc.ErrNoServer, "server_identity": alpc.ErrServerIdentity,
		"rejected": alpc.ErrRejected, "peer_closed": alpc.ErrPeerClosed, "unavailable": alpc.ErrBrokerUnavailable,
		"no_broker": alpc.ErrNoBroker, "port_in_use": alpc.ErrPortInUse, "limit": alpc.ErrLimit,
	} {
		if errors.Is(err, e) {
			kind = k
		}
	}
	return map[string]any{"ok": false, "error": err.Error(), "kind": kind}
}

// serverHandler echoes, and calls back into the client on "callback".
var serverHandler = alpc.HandlerFunc(func(ctx context.Context, req *alpc.Request) ([]byte, error) {
	if string(req.Payload()) == "callback" {
		r, err := req.Conn().Call(ctx, []byte("ping"))
		if err != nil {
			return nil, err
		}
		return append([]byte("callback:"), r...), nil
	}
	if strings.HasPrefix(string(req.Payload()), "big:") {
		return []byte(strconv.Itoa(len(req.Payload()))), nil
	}
	return append([]byte("echo:"), req.Payload()...), nil
})

var clientHandler = alpc.HandlerFunc(func(ctx context.Context, req *alpc.Request) ([]byte, error) {
	return []byte("pong"), nil
})

// publishLoop publishes name and keeps it published: when the broker goes
// away (sidecar restart), it publishes again, as a resilient server should.
// With within > 0, Publish is bounded by a context with that deadline, which
// must bound only the publication, not the port's life; the port is then
// published once, and its end (with the error) is recorded in portEnd.
func (p *podApp) publishLoop(ctx context.Context, name string, within time.Duration, first chan<- error) {
	for ctx.Err() == nil {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if within > 0 {
			pctx, cancel = context.WithTimeout(ctx, within)
		}
		port, err := alpc.Publish(pctx, name, &alpc.Config{Handler: serverHandler})
		cancel()
		if first != nil {
			first <- err
			first = nil
			if err != nil {
				return
			}
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		p.port = port
		p.mu.Unlock()
		for {
			req, err := port.Accept(ctx)
			if err != nil {
				break
			}
			p.mu.Lock()
			p.incoming = append(p.incoming, map[string]string{
				"message": string(req.Message), "namespace": req.Peer.Identity.Namespace, "pod": req.Peer.Identity.PodName,
				"uid": req.Peer.Identity.PodUID, "serviceAccount": req.Peer.Identity.ServiceAccount})
			p.mu.Unlock()
			if string(req.Message) == "reject-me" {
				_ = req.Reject("rejected by the server application")
				continue
			}
			if string(req.Message) == "reject-long" {
				// Longer than the sidecars relay, cut inside a two-byte rune.
				_ = req.Reject(longReason)
				continue
			}
			c, err := req.Accept([]byte("welcome " + string(req.Message)))
			if err != nil {
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
		}
		_ = port.Close()
		if within > 0 {
			_, err := port.Accept(ctx)
			p.mu.Lock()
			p.portEnd = err.Error()
			p.mu.Unlock()
			return
		}
	}
}

// longReason is a rejection reason longer than the control protocol's
// error message limit (4 KiB), with a two-byte rune across the limit.
var longReason = strings.Repeat("a", 4<<10-1) + strings.Repeat("é", 100)

func (p *podApp) conn(arg string) (*alpc.Conn, error) {
	i, err := strconv.Atoi(arg)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil || i < 0 || i >= len(p.conns) {
		return nil, fmt.Errorf("no conn %q", arg)
	}
	return p.conns[i], nil
}

func (p *podApp) do(args []string) map[string]any {
	if len(args) == 0 {
		return map[string]any{"ok": false, "error": "empty command"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	switch args[0] {
	case "publish", "publish-within":
		// publish-within <port> <ms>: Publish with a context deadline.
		var within time.Duration
		if args[0] == "publish-within" {
			ms, err := strconv.Atoi(args[2])
			if err != nil {
				return errResult(err)
			}
			within = time.Duration(ms) * time.Millisecond
		}
		pctx, stop := context.WithCancel(context.Background())
		first := make(chan error, 1)
		go p.publishLoop(pctx, args[1], within, first)
		if err := <-first; err != nil {
			stop()
			return errResult(err)
		}
		p.publish = stop
		return map[string]any{"ok": true}
	case "publish-deaf":
		// A server application that publishes and then stops receiving
		// from its sidecar (its control socket shut for reading), as an
		// application does in the instant it exits: the sidecar still has
		// the publication but cannot deliver to it.
		sc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: os.Getenv(alpc.EnvSocket), Net: "unixpacket"})
		if err != nil {
			return errResult(err)
		}
		if err := ctl.Write(sc, &ctl.Message{Type: ctl.TypePublish, Name: args[1]}, nil); err != nil {
			_ = sc.Close()
			return errResult(err)
		}
		m, f, err := ctl.Read(sc)
		if f != nil {
			_ = f.Close()
		}
		if err != nil || m.Type != ctl.TypePublished {
			_ = sc.Close()
			return map[string]any{"ok": false, "error": fmt.Sprintf("publish: %v %v", m, err)}
		}
		if err := sc.CloseRead(); err != nil {
			_ = sc.Close()
			return errResult(err)
		}
		p.mu.Lock()
		p.deaf = append(p.deaf, sc)
		p.mu.Unlock()
		return map[string]any{"ok": true}
	case "unpublish":
		if p.publish == nil {
			return map[string]any{"ok": false, "error": "nothing published"}
		}
		p.publish()
		p.publish = nil
		return map[string]any{"ok": true}
	case "connect", "connect-within", "connect-wait":
		// connect-within <port> <ms> [msg]: Connect with that deadline;
		// connect-wait: the same with Config.WaitForServer.
		if args[0] != "connect" {
			ms, err := strconv.Atoi(args[2])
			if err != nil {
				return errResult(err)
			}
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.Background(), time.Duration(ms)*time.Millisecond)
			defer cancel()
			args = append(args[:2], args[3:]...)
		}
		msg := ""
		if len(args) > 2 {
			msg = args[2]
		}
		start := time.Now()
		c, err := alpc.Connect(ctx, args[1], []byte(msg), &alpc.Config{Handler: clientHandler, WaitForServer: args[0] == "connect-wait"})
		took := time.Since(start).Seconds()
		if err != nil {
			r := errResult(err)
			r["seconds"] = took
			return r
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		n := len(p.conns) - 1
		p.mu.Unlock()
		return map[string]any{"ok": true, "conn": n, "reply": string(c.AcceptMessage()), "inline": c.Limits().InlineLimit, "seconds": took}
	case "call":
		c, err := p.conn(args[1])
		if err != nil {
			return errResult(err)
		}
		payload := []byte(args[2])
		if n, err := strconv.Atoi(args[2]); err == nil {
			payload = append([]byte("big:"), make([]byte, n)...)
		}
		r, err := c.Call(ctx, payload)
		if err != nil {
			return errResult(err)
		}
		return map[string]any{"ok": true, "reply": string(r)}
	case "close":
		c, err := p.conn(args[1])
		if err != nil {
			return errResult(err)
		}
		_ = c.Close()
		return map[string]any{"ok": true}
	case "wait-closed":
		c, err := p.conn(args[1])
		if err != nil {
			return errResult(err)
		}
		select {
		case <-c.Done():
			return errResult(c.Err())
		case <-ctx.Done():
			return map[string]any{"ok": true, "error": "still open"}
		}
	case "sidecar-pid":
		if p.sidecar == nil {
			return map[string]any{"ok": false, "error": "no sidecar"}
		}
		return map[string]any{"ok": true, "pid": p.sidecar.Process.Pid}
	case "port-end":
		p.mu.Lock()
		defer p.mu.Unlock()
		return map[string]any{"ok": true, "end": p.portEnd}
	case "incoming":
		p.mu.Lock()
		defer p.mu.Unlock()
		b, _ := json.Marshal(p.incoming)
		return map[string]any{"ok": true, "incoming": string(b)}
	case "fds":
		ents, _ := os.ReadDir("/proc/self/fd")
		return map[string]any{"ok": true, "fds": len(ents)}
	case "stop-sidecar":
		p.stopSidecar(syscall.SIGTERM)
		return map[string]any{"ok": true}
	case "kill-sidecar":
		p.stopSidecar(syscall.SIGKILL)
		return map[string]any{"ok": true}
	case "start-sidecar":
		if err := p.startSidecar(); err != nil {
			return errResult(err)
		}
		return map[string]any{"ok": true}
	case "health":
		// health <path>: GET a path of the sidecar's health server, as the
		// kubelet's probes do, inside the pod's network namespace.
		resp, err := http.Get("http://127.0.0.1:15980" + args[1])
		if err != nil {
			return errResult(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return map[string]any{"ok": true, "status": resp.StatusCode, "body": string(b)}
	case "metrics":
		resp, err := http.Get("http://127.0.0.1:15981/metrics")
		if err != nil {
			return errResult(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return map[string]any{"ok": true, "metrics": string(b)}
	case "app-metrics":
		// What the application exports with pkg/alpc/alpcmetrics.
		reg := prometheus.NewRegistry()
		reg.MustRegister(alpcmetrics.NewCollector())
		rec := httptest.NewRecorder()
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		return map[string]any{"ok": true, "metrics": rec.Body.String()}
	case "connect-bench":
		// connect-bench <port> <n> <in flight>: n connects (each followed
		// by one small call and a close), that many at a time.
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return errResult(err)
		}
		inFlight, err := strconv.Atoi(args[3])
		if err != nil {
			return errResult(err)
		}
		bctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		return connectBench(bctx, args[1], n, inFlight)
	case "start-app":
		// start-app <binary> <args...>: another application in this pod
		// (the version-skew test's previous-release peer), with the pod's
		// environment; waits for its first line on stdout.
		return p.startApp(ctx, args[1], args[2:])
	case "run-app":
		// run-app <binary> <args...>: the same, run to its end (60 s at
		// most); ok when it exits 0.
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(rctx, args[1], args[2:]...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		r := map[string]any{"ok": err == nil, "stdout": stdout.String(), "stderr": stderr.String()}
		if err != nil {
			r["error"] = err.Error()
		}
		return r
	case "netdevs":
		ifs, _ := net.Interfaces()
		return map[string]any{"ok": true, "count": len(ifs)}
	}
	return map[string]any{"ok": false, "error": "unknown command " + args[0]}
}

// startApp starts binary with args in this pod, its stderr going to
// app.log in the pod directory, and returns its first line on stdout. It
// is killed with the pod process.
func (p *podApp) startApp(ctx context.Context, binary string, args []string) map[string]any {
	logf, err := os.OpenFile(p.dir+"/app.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return errResult(err)
	}
	defer logf.Close()
	cmd := exec.Command(binary, args...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return errResult(err)
	}
	if err := cmd.Start(); err != nil {
		return errResult(err)
	}
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Scan()
		first <- sc.Text()
		for sc.Scan() {
		}
		_ = cmd.Wait()
	}()
	select {
	case line := <-first:
		return map[string]any{"ok": true, "line": line}
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		return errResult(fmt.Errorf("%s printed nothing: %w", binary, ctx.Err()))
	}
}

// connectBench times n alpc.Connect calls alone (each then makes one small
// call and closes), inFlight at a time, and reports the latencies and the
// rate over the whole run.
func connectBench(ctx context.Context, port string, n, inFlight int) map[string]any {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	errs := make(chan error, inFlight)
	start := time.Now()
	var wg sync.WaitGroup
	for range inFlight {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				c, err := alpc.Connect(ctx, port, nil, &alpc.Config{Handler: clientHandler})
				lat[i] = time.Since(t0)
				if err == nil {
					_, err = c.Call(ctx, []byte("x"))
					_ = c.Close()
				}
				if err != nil {
					errs <- fmt.Errorf("connect %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return errResult(err)
	}
	slices.Sort(lat)
	pct := func(q float64) float64 { return lat[min(n-1, int(q*float64(n)))].Seconds() * 1000 }
	return map[string]any{"ok": true, "p50ms": pct(0.50), "p99ms": pct(0.99), "maxms": lat[n-1].Seconds() * 1000,
		"perSecond": float64(n) / wall.Seconds()}
}
