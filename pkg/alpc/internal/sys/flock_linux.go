//go:build linux && !kalpc_stub

package sys

import (
	"os"

	"golang.org/x/sys/unix"
)

// ONoFollow is open(2)'s O_NOFOLLOW, for os.OpenFile.
const ONoFollow = unix.O_NOFOLLOW

// Flock wraps flock(2) with LOCK_EX|LOCK_NB. It returns EWOULDBLOCK (wrapped)
// when another open file description holds the lock.
func Flock(fd int) error {
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == unix.EINTR {
			continue
		}
		return os.NewSyscallError("flock", err)
	}
}

// SameFile reports whether the open descriptor fd and the path name the same
// inode; used to detect a lock file that was unlinked and recreated between
// open and flock.
func SameFile(fd int, path string) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Fstat(fd, &a); err != nil {
		return false, os.NewSyscallError("fstat", err)
	}
	if err := unix.Stat(path, &b); err != nil {
		if err == unix.ENOENT {
			return false, nil
		}
		return false, os.NewSyscallError("stat", err)
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// IsSocketFile reports whether path exists and is a socket (without
// following symlinks). It returns (false, nil) when the path does not exist.
func IsSocketFile(path string) (exists, socket bool, err error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if err == unix.ENOENT {
			return false, false, nil
		}
		return false, false, os.NewSyscallError("lstat", err)
	}
	return true, st.Mode&unix.S_IFMT == unix.S_IFSOCK, nil
}
