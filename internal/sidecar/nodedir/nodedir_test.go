package nodedir

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newDir(t *testing.T) Dir {
	t.Helper()
	d := Dir{Root: t.TempDir()}
	if err := d.Init(); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestListenExclusiveAndClose(t *testing.T) {
	d := newDir(t)
	p := d.EndpointPath("apps", "echo", "uid-1")
	l, err := Listen(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(p); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen = %v, want ErrInUse", err)
	}
	if ok, err := CleanStale(p); ok || err != nil {
		t.Fatalf("CleanStale of a live entry = %v, %v", ok, err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", st, err)
	}
	if uids, _ := d.Endpoints("apps", "echo"); len(uids) != 1 || uids[0] != "uid-1" {
		t.Fatalf("Endpoints = %v", uids)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p, p + ".lock"} {
		if _, err := os.Lstat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", f, err)
		}
	}
}

// A stale entry: a socket nobody listens on, with a lock nobody holds.
func plantStale(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: p, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	_ = ln.Close()
	if err := os.WriteFile(p+".lock", nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSweepRemovesStaleOnly(t *testing.T) {
	d := newDir(t)
	live, err := Listen(d.EndpointPath("apps", "echo", "live"))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	plantStale(t, d.EndpointPath("apps", "echo", "dead"))
	plantStale(t, d.EndpointPath("apps", "gone", "dead"))
	plantStale(t, d.IdentityPath("dead"))
	n, err := d.Sweep()
	if err != nil || n != 3 {
		t.Fatalf("Sweep = %d, %v; want 3 removed", n, err)
	}
	if uids, _ := d.Endpoints("apps", "echo"); len(uids) != 1 || uids[0] != "live" {
		t.Fatalf("after sweep Endpoints = %v", uids)
	}
	if _, err := os.Stat(d.PortDir("apps", "gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty port directory not removed: %v", err)
	}
	// A stale entry is replaced by Listen.
	plantStale(t, d.EndpointPath("apps", "echo", "again"))
	l, err := Listen(d.EndpointPath("apps", "echo", "again"))
	if err != nil {
		t.Fatalf("Listen over a stale entry: %v", err)
	}
	_ = l.Close()
}

func TestLongPortName(t *testing.T) {
	d := newDir(t)
	name := strings.Repeat("a", 253)
	p := d.EndpointPath(strings.Repeat("n", 63), name, "0123456789abcdef-0123-4567-89ab-cdef01234567")
	l, err := Listen(p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go ServeIdentity(l)
	c, err := Dial(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id, err := PeerProcess(c)
	if err != nil || id == 0 {
		t.Fatalf("PeerProcess = %d, %v", id, err)
	}
}

func TestIdentityProcess(t *testing.T) {
	d := newDir(t)
	l, err := Listen(d.IdentityPath("pod-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go ServeIdentity(l)
	got, err := d.IdentityProcess(t.Context(), "pod-a")
	if err != nil {
		t.Fatal(err)
	}
	// This process listens, so the identity is our own process.
	self, err := PeerProcess(selfConn(t))
	if err != nil {
		t.Fatal(err)
	}
	if got != self {
		t.Fatalf("IdentityProcess = %d, want this process %d", got, self)
	}
	if _, err := d.IdentityProcess(t.Context(), "pod-b"); err == nil {
		t.Fatal("IdentityProcess of a pod without a sidecar succeeded")
	}
}

func selfConn(t *testing.T) *net.UnixConn {
	p := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: p, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	c, err := Dial(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
