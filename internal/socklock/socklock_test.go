//go:build linux

package socklock

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// plantSocket leaves a socket file at p that nobody listens on, as a
// process that died would.
func plantSocket(t *testing.T, p string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	_ = ln.Close()
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return !errors.Is(err, fs.ErrNotExist)
}

func TestAcquireExclusiveAndRelease(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "p.sock")
	l, err := Acquire(sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(sock); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Acquire = %v, want ErrInUse", err)
	}
	st, err := os.Stat(sock + Ext)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v, %v; want mode 0600", st, err)
	}
	plantSocket(t, sock) // stands for the owner's bound socket
	if ok, err := CleanStale(sock); ok || err != nil {
		t.Fatalf("CleanStale of a held socket = %v, %v; want false, nil", ok, err)
	}
	l.Release(true)
	for _, p := range []string{sock, sock + Ext} {
		if exists(p) {
			t.Errorf("%s left behind by Release", p)
		}
	}
	l2, err := Acquire(sock)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	l2.Release(true)
}

func TestAcquireReplacesStaleSocketOnly(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	plantSocket(t, stale)
	if err := os.WriteFile(stale+Ext, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Acquire(stale)
	if err != nil {
		t.Fatalf("Acquire over a stale socket: %v", err)
	}
	if exists(stale) {
		t.Error("stale socket not removed")
	}
	l.Release(true)

	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Acquire over a regular file = %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("a regular file at the socket path was touched")
	}
	if exists(file + Ext) {
		t.Error("lock file left behind by a failed Acquire")
	}
}

func TestAcquireRefusesSymlinkedLock(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	sock := filepath.Join(dir, "p.sock")
	if err := os.Symlink(target, sock+Ext); err != nil {
		t.Fatal(err)
	}
	if l, err := Acquire(sock); err == nil {
		l.Release(false)
		t.Fatal("Acquire followed a symlink planted at the lock's path")
	}
	if exists(target) {
		t.Error("the symlink's target was created")
	}
}

func TestCleanStale(t *testing.T) {
	dir := t.TempDir()
	dead := filepath.Join(dir, "dead.sock")
	plantSocket(t, dead)
	if err := os.WriteFile(dead+Ext, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, err := CleanStale(dead); !ok || err != nil {
		t.Fatalf("CleanStale of a dead entry = %v, %v; want true, nil", ok, err)
	}
	if exists(dead) || exists(dead+Ext) {
		t.Error("dead entry not removed")
	}

	// A socket without a lock: an owner may be between creating its lock
	// and binding, so only an old one is stale.
	young := filepath.Join(dir, "young.sock")
	plantSocket(t, young)
	if ok, _ := CleanStale(young); ok || !exists(young) {
		t.Error("a lockless socket younger than 5 s was removed")
	}
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(young, old, old); err != nil {
		t.Fatal(err)
	}
	if ok, err := CleanStale(young); !ok || err != nil || exists(young) {
		t.Errorf("CleanStale of an old lockless socket = %v, %v; want it removed", ok, err)
	}
}

func TestCleanOrphanLock(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "p.sock")
	l, err := Acquire(sock)
	if err != nil {
		t.Fatal(err)
	}
	CleanOrphanLock(sock)
	if !exists(sock + Ext) {
		t.Fatal("a held lock was removed")
	}
	// Drop the lock without removing its file, as a process that died.
	_ = l.f.Close()
	CleanOrphanLock(sock)
	if exists(sock + Ext) {
		t.Error("an orphaned lock nobody holds was left")
	}
}
