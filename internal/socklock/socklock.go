package socklock

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// Ext is the lock file's suffix: the lock of the socket at P is P + Ext.
const Ext = ".lock"

// TempExt is the suffix of TempName's names.
const TempExt = ".tmp"

// ErrInUse means a live process holds the socket's lock.
var ErrInUse = errors.New("socket held by a live process")

// Lock is a held lock over a socket path.
type Lock struct {
	sock string
	f    *os.File
}

// Acquire takes the lock of the socket path sock, creating the lock file
// (mode 0600) if needed, and removes a stale socket at sock. It fails with
// ErrInUse if a live process holds the lock, and refuses to replace a file
// at sock that is not a socket. An error wrapping fs.ErrNotExist means
// sock's directory is missing.
func Acquire(sock string) (*Lock, error) {
	f, err := lock(sock + Ext)
	if err != nil {
		return nil, err
	}
	l := &Lock{sock: sock, f: f}
	// We hold the lock: whatever socket is at sock is stale.
	st, err := os.Lstat(sock)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return l, nil
	case err != nil:
		l.Release(false)
		return nil, err
	case st.Mode().Type() != fs.ModeSocket:
		l.Release(false)
		return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", sock)
	}
	if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		l.Release(false)
		return nil, fmt.Errorf("removing stale socket: %w", err)
	}
	return l, nil
}

// Release gives the socket path up: the socket is removed first (if
// removeSocket: the caller's socket is still the one at the path), then the
// lock file, while the lock is still held, and then the lock is dropped.
func (l *Lock) Release(removeSocket bool) {
	if removeSocket {
		_ = os.Remove(l.sock)
	}
	_ = os.Remove(l.sock + Ext)
	_ = l.f.Close()
}

// TempName returns a fresh name for a temporary socket: a base name in
// the socket's directory, to bind and then rename into place.
func TempName() string {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return "." + hex.EncodeToString(rnd[:]) + TempExt
}

// lock opens (creating it) and flocks the lock file at path, retrying if
// it was replaced between open and flock (an owner closing concurrently
// unlinks it).
func lock(path string) (*os.File, error) {
	for range 10 {
		// O_NOFOLLOW: a symlink planted at the lock's path must not make
		// us create or lock some other file.
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|oNoFollow, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening lock file: %w", err)
		}
		same, err := flockSame(f, path)
		if err != nil || !same {
			_ = f.Close()
			if err != nil {
				return nil, err
			}
			continue
		}
		return f, nil
	}
	return nil, fmt.Errorf("lock file %s keeps being replaced", path)
}

// flockSame takes f's lock without blocking (ErrInUse if another process
// holds it) and reports whether path still names f.
func flockSame(f *os.File, path string) (bool, error) {
	if err := flock(f); err != nil {
		return false, err
	}
	a, err := f.Stat()
	if err != nil {
		return false, err
	}
	b, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

// CleanStale removes the socket at sock and its lock file if no live
// process holds the lock, and reports whether it did. A socket without a
// lock file is stale too (an owner creates the lock first and removes it
// last), once it is older than a few seconds: an owner between creating
// its lock and binding gets that long.
func CleanStale(sock string) (bool, error) {
	lockPath := sock + Ext
	f, err := os.OpenFile(lockPath, os.O_RDWR|oNoFollow, 0)
	if errors.Is(err, fs.ErrNotExist) {
		st, serr := os.Lstat(sock)
		if serr != nil || time.Since(st.ModTime()) < 5*time.Second {
			return false, nil
		}
		return os.Remove(sock) == nil, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	ok, err := flockSame(f, lockPath)
	if errors.Is(err, ErrInUse) {
		return false, nil
	}
	if err != nil || !ok {
		return false, err
	}
	_ = os.Remove(sock)
	_ = os.Remove(lockPath)
	return true, nil
}

// CleanOrphanLock removes the lock file of the socket path sock if there
// is no socket at sock and nobody holds the lock.
func CleanOrphanLock(sock string) {
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		return
	}
	lockPath := sock + Ext
	f, err := os.OpenFile(lockPath, os.O_RDWR|oNoFollow, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if ok, _ := flockSame(f, lockPath); ok {
		// An owner may have bound its socket since the first look.
		if _, err := os.Lstat(sock); errors.Is(err, fs.ErrNotExist) {
			_ = os.Remove(lockPath)
		}
	}
}
