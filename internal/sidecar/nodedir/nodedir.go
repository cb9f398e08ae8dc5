package nodedir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kalpc/kalpc/internal/socklock"
)

const (
	dirMode  = 0o700
	fileMode = 0o600
	sockExt  = ".sock"
	// maxUID bounds a pod UID used as a file name.
	maxUID = 63
)

// ErrInUse means a live process holds the entry.
var ErrInUse = socklock.ErrInUse

// Dir is a node directory.
type Dir struct {
	// Root is the directory's path (--node-dir).
	Root string
}

// PortDir returns the directory holding the endpoints of port namespace/name.
func (d Dir) PortDir(namespace, name string) string {
	return filepath.Join(d.Root, "ports", namespace, name)
}

// EndpointPath returns the path of a server pod's endpoint of a port.
func (d Dir) EndpointPath(namespace, name, podUID string) string {
	return filepath.Join(d.PortDir(namespace, name), podUID+sockExt)
}

// IdentityPath returns the path of a pod's identity socket.
func (d Dir) IdentityPath(podUID string) string {
	return filepath.Join(d.Root, "pods", podUID+sockExt)
}

// Init creates the top-level directories and checks that Root is a usable
// directory.
func (d Dir) Init() error {
	st, err := os.Stat(d.Root)
	if err != nil {
		return fmt.Errorf("node directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("node directory %s is not a directory", d.Root)
	}
	for _, sub := range []string{"pods", "ports"} {
		if err := mkdirNoFollow(filepath.Join(d.Root, sub)); err != nil {
			return err
		}
	}
	return nil
}

// Check reports whether the node directory is usable: present, a
// directory, and writable.
func (d Dir) Check() error {
	for _, p := range []string{d.Root, filepath.Join(d.Root, "pods"), filepath.Join(d.Root, "ports")} {
		if err := unix.Access(p, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("node directory %s not writable: %w", p, err)
		}
	}
	return nil
}

// mkdirNoFollow creates dir (and missing parents) with mode 0700 and
// refuses a symlink in its place, so a planted link cannot redirect
// sockets elsewhere.
func mkdirNoFollow(dir string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("checking %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory (a symlink?); refusing to use it", dir)
	}
	return nil
}

// ValidUID reports whether s can be a pod UID file name.
func ValidUID(s string) bool {
	if s == "" || len(s) > maxUID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// Listener is a socket in the node directory guarded by its lock file
// (see internal/socklock).
type Listener struct {
	path string
	lock *socklock.Lock
	ln   *net.UnixListener
	ino  uint64
}

// Listen creates the entry (socket and lock) at path, replacing a stale
// one; it fails with ErrInUse if a live process holds it. The socket is
// bound under a temporary name, made 0600 and renamed into place, so a
// client never connects to a half-made socket.
func Listen(path string) (*Listener, error) {
	dir, base := filepath.Split(path)
	if !strings.HasSuffix(base, sockExt) {
		return nil, fmt.Errorf("nodedir: %s does not end in %s", path, sockExt)
	}
	var lock *socklock.Lock
	var err error
	for range 5 {
		if err = mkdirNoFollow(dir); err != nil {
			return nil, err
		}
		// With the lock held, a stale socket at path is gone.
		lock, err = socklock.Acquire(path)
		if !errors.Is(err, fs.ErrNotExist) {
			break // a concurrent sweep may remove an empty directory; retry
		}
	}
	if err != nil {
		return nil, fmt.Errorf("nodedir: listening on %s: %w", path, err)
	}
	l := &Listener{path: path, lock: lock}
	if err := l.bind(dir); err != nil {
		lock.Release(false)
		return nil, fmt.Errorf("nodedir: listening on %s: %w", path, err)
	}
	return l, nil
}

func (l *Listener) bind(dir string) error {
	tmpBase := socklock.TempName()
	var ln *net.UnixListener
	err := viaDir(dir, tmpBase, func(addr string) error {
		var err error
		ln, err = net.ListenUnix("unixpacket", &net.UnixAddr{Name: addr, Net: "unixpacket"})
		return err
	})
	if err != nil {
		return err
	}
	ln.SetUnlinkOnClose(false)
	tmp := filepath.Join(dir, tmpBase)
	if err := os.Chmod(tmp, fileMode); err != nil {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(tmp, &st); err != nil {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, l.path); err != nil {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return err
	}
	l.ln, l.ino = ln, st.Ino
	return nil
}

// viaDir runs f with a socket address naming base inside dir that fits in
// a sockaddr_un however long dir is.
func viaDir(dir, base string, f func(addr string) error) error {
	if len(filepath.Join(dir, base)) < 100 {
		return f(filepath.Join(dir, base))
	}
	d, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	return f(fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), base))
}

// Path returns the entry's socket path.
func (l *Listener) Path() string { return l.path }

// Accept waits for the next connection.
func (l *Listener) Accept() (*net.UnixConn, error) { return l.ln.AcceptUnix() }

// Intact reports whether the entry's path still names this Listener's
// socket (nobody removed or replaced it).
func (l *Listener) Intact() bool {
	var st unix.Stat_t
	return unix.Lstat(l.path, &st) == nil && st.Ino == l.ino
}

// Close stops listening and removes the entry: the socket first, then the
// lock file, while the lock is still held.
func (l *Listener) Close() error {
	err := l.ln.Close()
	l.lock.Release(l.Intact())
	return err
}

// CleanStale removes the entry at sockPath if no live process holds its
// lock, and reports whether it did (see socklock.CleanStale).
func CleanStale(sockPath string) (bool, error) { return socklock.CleanStale(sockPath) }

// Endpoints lists the pod UIDs with an endpoint of port namespace/name, in
// name order. A missing port directory means none.
func (d Dir) Endpoints(namespace, name string) ([]string, error) {
	ents, err := os.ReadDir(d.PortDir(namespace, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var uids []string
	for _, e := range ents {
		uid, ok := strings.CutSuffix(e.Name(), sockExt)
		if ok && e.Type() == fs.ModeSocket && ValidUID(uid) {
			uids = append(uids, uid)
		}
	}
	return uids, nil
}

// Sweep removes stale entries (of dead processes) under pods/ and ports/,
// leftover temporary sockets older than a minute, and empty port
// directories. It returns how many entries it removed.
func (d Dir) Sweep() (int, error) {
	removed := 0
	var errs []error
	clean := func(dir string) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			return
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			switch {
			case strings.HasSuffix(e.Name(), sockExt):
				ok, err := CleanStale(p)
				if err != nil {
					errs = append(errs, err)
				}
				if ok {
					removed++
				}
			case strings.HasSuffix(e.Name(), sockExt+socklock.Ext):
				// An orphaned lock: removed if nobody holds it.
				socklock.CleanOrphanLock(strings.TrimSuffix(p, socklock.Ext))
			case strings.HasSuffix(e.Name(), socklock.TempExt):
				if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Minute {
					_ = os.Remove(p)
				}
			}
		}
	}
	clean(filepath.Join(d.Root, "pods"))
	nss, _ := os.ReadDir(filepath.Join(d.Root, "ports"))
	for _, ns := range nss {
		if !ns.IsDir() {
			continue
		}
		nsDir := filepath.Join(d.Root, "ports", ns.Name())
		ports, _ := os.ReadDir(nsDir)
		for _, port := range ports {
			if !port.IsDir() {
				continue
			}
			pd := filepath.Join(nsDir, port.Name())
			clean(pd)
			_ = unix.Rmdir(pd) // only succeeds when empty
		}
		_ = unix.Rmdir(nsDir)
	}
	return removed, errors.Join(errs...)
}

// Dial connects to the node-directory socket at path.
func Dial(ctx context.Context, path string) (*net.UnixConn, error) {
	dir, base := filepath.Split(path)
	var c net.Conn
	err := viaDir(dir, base, func(addr string) error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "unixpacket", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

// soPeerPidfd is SO_PEERPIDFD (Linux 6.5), not yet in x/sys/unix.
const soPeerPidfd = 77

// PeerProcess returns an identifier of the process at the other end of c:
// for a connecting socket, the process that listens; for an accepted one,
// the process that connected. Two identifiers are equal exactly when they
// name the same process (the pidfs inode of its pidfd, unique across PID
// namespaces; Linux 6.9 or later).
func PeerProcess(c *net.UnixConn) (uint64, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var ino uint64
	var opErr error
	err = raw.Control(func(fd uintptr) {
		pidfd, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, soPeerPidfd)
		if err != nil {
			opErr = os.NewSyscallError("getsockopt SO_PEERPIDFD", err)
			return
		}
		defer unix.Close(pidfd)
		var st unix.Stat_t
		if err := unix.Fstat(pidfd, &st); err != nil {
			opErr = os.NewSyscallError("fstat pidfd", err)
			return
		}
		ino = st.Ino
	})
	if err != nil {
		return 0, err
	}
	return ino, opErr
}

// IdentityProcess connects to the identity socket of pod podUID and returns
// the identifier (as PeerProcess) of the process listening on it: the live
// sidecar of that pod on this node. It fails if the pod has no live sidecar
// on this node.
func (d Dir) IdentityProcess(ctx context.Context, podUID string) (uint64, error) {
	if !ValidUID(podUID) {
		return 0, fmt.Errorf("invalid pod uid %q", podUID)
	}
	c, err := Dial(ctx, d.IdentityPath(podUID))
	if err != nil {
		return 0, fmt.Errorf("pod %s has no live sidecar on this node: %w", podUID, err)
	}
	defer c.Close()
	return PeerProcess(c)
}

// ServeIdentity accepts and immediately closes connections on l, the pod's
// identity socket, until l is closed: a verifier only needs to connect to
// learn which process listens.
func ServeIdentity(l *Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_ = c.Close()
	}
}
