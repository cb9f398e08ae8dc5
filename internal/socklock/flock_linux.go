//go:build linux

package socklock

import (
	"os"

	"golang.org/x/sys/unix"
)

const oNoFollow = unix.O_NOFOLLOW

// flock takes f's exclusive lock without blocking: flock(2) with
// LOCK_EX|LOCK_NB. It returns ErrInUse when another open file description
// holds the lock.
func flock(f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB)
			if ferr != unix.EINTR {
				break
			}
		}
	}); err != nil {
		return err
	}
	switch ferr {
	case nil:
		return nil
	case unix.EWOULDBLOCK:
		return ErrInUse
	}
	return os.NewSyscallError("flock", ferr)
}
