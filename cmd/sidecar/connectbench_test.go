package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestConnectBench measures brokered connects without a cluster: two real
// sidecar binaries (client and server pods in their own network namespaces,
// sharing a node directory, against envtest), the client application timing
// alpc.Connect alone (each connect then makes one small call and closes),
// first sequentially, then 20 in flight. It reports p50, p99, max and
// connects/s, the CPU each sidecar spent per connect (from /proc), and the
// top of each sidecar's CPU profile (--cpu-profile).
//
//	KALPC_CONNECT_BENCH=1 KUBEBUILDER_ASSETS=$(hack/envtest-bins.sh) \
//	  go test -count=1 -v -run TestConnectBench ./cmd/sidecar/
//
// Run it without -race. KALPC_CONNECT_BENCH_N sets the connects per run
// (default 500; the concurrent run makes twice as many) and
// KALPC_CONNECT_BENCH_OUT a directory to keep the profiles in.
func TestConnectBench(t *testing.T) {
	if os.Getenv("KALPC_CONNECT_BENCH") == "" {
		t.Skip("set KALPC_CONNECT_BENCH=1 to run the connect benchmark")
	}
	n := 500
	if v := os.Getenv("KALPC_CONNECT_BENCH_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			t.Fatalf("KALPC_CONNECT_BENCH_N=%q", v)
		}
	}
	c := newCluster(t)
	// Info, not the tests' debug logging, which costs a line per step.
	c.sidecarArgs = []string{"--cpu-profile={dir}/cpu.pprof", "--log-level=info"}
	c.port("echo", echoPortSpec("client"))
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	client := c.newPod("client", "client", nil)
	server.must("publish echo")
	// Warm: the first connect fills the TokenReview and pod caches.
	client.must("connect %s/echo warm", c.ns)
	pids := map[string]int{}
	for _, p := range []*pod{client, server} {
		pids[p.name] = int(p.must("sidecar-pid")["pid"].(float64))
	}

	t.Logf("%-26s %8s %8s %8s %10s %14s %14s", "run", "p50 ms", "p99 ms", "max ms", "connects/s", "client CPU/c", "server CPU/c")
	for _, run := range []struct {
		name     string
		n        int
		inFlight int
	}{
		{fmt.Sprintf("%d sequential", n), n, 1},
		{fmt.Sprintf("%d, 20 in flight", 2*n), 2 * n, 20},
	} {
		before := map[string]time.Duration{}
		for name, pid := range pids {
			before[name] = cpuTime(t, pid)
		}
		r := client.must("connect-bench %s/echo %d %d", c.ns, run.n, run.inFlight)
		perConnect := map[string]time.Duration{}
		for name, pid := range pids {
			perConnect[name] = (cpuTime(t, pid) - before[name]) / time.Duration(run.n)
		}
		t.Logf("%-26s %8.2f %8.2f %8.2f %10.0f %14v %14v", run.name, r["p50ms"], r["p99ms"], r["maxms"], r["perSecond"],
			perConnect["client"].Round(time.Microsecond), perConnect["server"].Round(time.Microsecond))
	}

	// Stopping the sidecars writes their profiles.
	out := os.Getenv("KALPC_CONNECT_BENCH_OUT")
	for _, p := range []*pod{client, server} {
		p.must("stop-sidecar")
		prof := filepath.Join(p.dir, "cpu.pprof")
		top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=25", sidecarBin, prof).CombinedOutput()
		if err != nil {
			t.Fatalf("go tool pprof %s: %v\n%s", prof, err, top)
		}
		t.Logf("CPU profile of the %s sidecar (whole run, including start):\n%s", p.name, top)
		if out != "" {
			b, err := os.ReadFile(prof)
			if err == nil {
				err = os.WriteFile(filepath.Join(out, p.name+"-sidecar.pprof"), b, 0o644)
			}
			if err != nil {
				t.Error(err)
			}
		}
	}
}

// cpuTime returns the user and system CPU time process pid has used.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) in parentheses;
	// utime and stime are fields 14 and 15, in clock ticks (100 Hz).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("bad /proc/%d/stat: %q", pid, b)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
