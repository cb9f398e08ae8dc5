package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/internal/sidecar"
	"github.com/kalpc/kalpc/internal/sidecar/nodedir"
)

// TestIdleConnectionFloodIsBounded: a process that can reach a sidecar's
// endpoint (anything with node-directory access) or its pod socket (any
// container of the pod) opens thousands of connections and sends nothing.
// Each used to cost the sidecar a goroutine and buffers for as long as the
// attacker liked (3,000: +72 MiB, enough to OOM the sidecar's 128 Mi), and
// every endpoint connection got the server's token. The sidecar now holds
// at most --max-app-connections (64) on the pod socket and
// --max-peer-connections (256) on its endpoints, refuses the rest at once
// (counted), and drops a held connection that sends nothing for the
// handshake timeout (10 s). A good client gets a clear ErrLimit while the
// slots are held and connects once they are dropped; fds return to their
// baseline.
func TestIdleConnectionFloodIsBounded(t *testing.T) {
	const flood = 3000
	c := newCluster(t)
	c.port("echo", echoPortSpec("client"))
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	client := c.newPod("client", "client", nil)
	server.must("publish echo")
	warm := int(client.must("connect %s/echo warm-up", c.ns)["conn"].(float64)) // API connections and caches in place
	server.must("metrics")                                                      // and the metrics connection
	pid := int(server.must("sidecar-pid")["pid"].(float64))
	fdsBefore, rssBefore := sidecarFDs(t, pid), vmRSS(t, pid)

	endpoint := nodedir.Dir{Root: c.nodeDir}.EndpointPath(c.ns, "echo", server.uid)
	podSocket := filepath.Join(server.dir, "kalpc.sock")
	var idle []net.Conn
	t.Cleanup(func() {
		for _, c := range idle {
			_ = c.Close()
		}
	})
	dial := func(what string, f func() (net.Conn, error)) {
		failed := 0
		for range flood {
			c, err := f()
			for tries := 0; err != nil && tries < 50; tries++ {
				time.Sleep(time.Millisecond) // accept backlog full: the sidecar drains it
				c, err = f()
			}
			if err != nil {
				failed++
				continue
			}
			idle = append(idle, c)
		}
		if failed > 0 {
			t.Fatalf("%d of %d connections to the %s failed", failed, flood, what)
		}
	}
	dial("endpoint", func() (net.Conn, error) { return nodedir.Dial(t.Context(), endpoint) })
	dial("pod socket", func() (net.Conn, error) {
		return net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: podSocket, Net: "unixpacket"})
	})
	// The publication holds one of the pod socket's slots.
	wantPod, wantPeer := flood-sidecar.DefaultMaxAppConnections+1, flood-sidecar.DefaultMaxPeerConnections
	eventually(t, func() bool {
		m := server.must("metrics")["metrics"].(string)
		return counter(m, `kalpc_sidecar_refused_connections_total{listener="pod"}`) >= float64(wantPod) &&
			counter(m, `kalpc_sidecar_refused_connections_total{listener="endpoint"}`) >= float64(wantPeer)
	})
	fdsDuring, rssDuring := sidecarFDs(t, pid), vmRSS(t, pid)
	growth := rssDuring - rssBefore
	t.Logf("server sidecar with %d idle connections on each listener: RSS %d KiB → %d KiB (+%d KiB), fds %d → %d",
		flood, rssBefore>>10, rssDuring>>10, growth>>10, fdsBefore, fdsDuring)
	// Each held connection costs a goroutine, a socket and its timers
	// (about 24 KiB resident; no read buffer until a message arrives):
	// 64 KiB each is generous. Unbounded, the 6,000 cost +53 MiB.
	held := sidecar.DefaultMaxAppConnections + sidecar.DefaultMaxPeerConnections
	if limit := int64(held) * 64 << 10; growth > limit {
		t.Errorf("RSS grew by %d KiB; want at most %d KiB (%d connections held × 64 KiB)", growth>>10, limit>>10, held)
	}
	if fdsDuring > fdsBefore+held+8 {
		t.Errorf("sidecar holds %d fds during the flood, %d before; want at most %d more", fdsDuring, fdsBefore, held)
	}

	// Channels already brokered do not go through the sidecar at all.
	if r := client.must("call %d during-flood", warm); r["reply"] != "echo:during-flood" {
		t.Fatalf("call on an established channel during the flood = %v", r)
	}

	// One more on each listener is refused at once, with the limit code.
	for _, tc := range []struct {
		what string
		dial func() (*net.UnixConn, error)
		want ctl.Type
	}{
		{"endpoint", func() (*net.UnixConn, error) { return nodedir.Dial(t.Context(), endpoint) }, ctl.TypePeerRefused},
		{"pod socket", func() (*net.UnixConn, error) {
			return net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: podSocket, Net: "unixpacket"})
		}, ctl.TypeError},
	} {
		c, err := tc.dial()
		if err != nil {
			t.Fatalf("dialing the %s once more: %v", tc.what, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, _, err := ctl.Read(c)
		_ = c.Close()
		if err != nil || m.Type != tc.want || m.Code != ctl.CodeLimit {
			t.Fatalf("one more connection to the %s got %+v, %v; want a %v with the limit code at once", tc.what, m, err, tc.want)
		}
	}

	// While the attacker holds every endpoint slot, a good client gets a
	// clear, quick ErrLimit, never a hang.
	if r := client.do("connect %s/echo during", c.ns); r["ok"] != true {
		if r["kind"] != "limit" || r["seconds"].(float64) > 5 {
			t.Fatalf("connect during the flood = %v; want ErrLimit at once (or success)", r)
		}
		t.Logf("connect during the flood: %.3fs: %v", r["seconds"], r["error"])
	}
	// Held connections that send nothing are dropped after the handshake
	// timeout, although the attacker keeps its ends open. (The slack of 2
	// is for the sidecar's own API and metrics connections.)
	eventually(t, func() bool { return sidecarFDs(t, pid) <= fdsBefore+2 })
	r := client.must("connect %s/echo after", c.ns)
	if r := client.must("call %d flood-over", int(r["conn"].(float64))); r["reply"] != "echo:flood-over" {
		t.Fatalf("call after the flood = %v", r)
	}

	for _, c := range idle {
		_ = c.Close()
	}
	idle = nil
	eventually(t, func() bool { return sidecarFDs(t, pid) <= fdsBefore+2 })
	t.Logf("server sidecar after the flood: fds %d (baseline %d), RSS %d KiB", sidecarFDs(t, pid), fdsBefore, vmRSS(t, pid)>>10)
}

// sidecarFDs counts the open descriptors of process pid.
func sidecarFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// vmRSS returns the resident set size of process pid in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// counter returns the value of the metric sample named exactly series in
// a Prometheus exposition, 0 if absent.
func counter(exposition, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(exposition)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}
