//go:build linux && !kalpc_stub

package sys

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// Eventfd wraps eventfd(2) (non-blocking, close-on-exec).
func Eventfd() (int, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, os.NewSyscallError("eventfd", err)
	}
	return fd, nil
}

// EventfdSignal makes an eventfd readable.
func EventfdSignal(fd int) {
	one := [8]byte{1}
	_, _ = unix.Write(fd, one[:])
}

// PollWake waits until fd has events or wakefd is signalled. It reports
// woken=true in the second case.
func PollWake(fd int, events int16, wakefd int) (woken bool, err error) {
	for {
		pfds := []unix.PollFd{{Fd: int32(fd), Events: events}, {Fd: int32(wakefd), Events: unix.POLLIN}}
		_, err := unix.Poll(pfds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, os.NewSyscallError("poll", err)
		}
		return pfds[1].Revents != 0, nil
	}
}

// IsTemporaryAcceptError reports errors after which accept should be retried
// later (descriptor or memory exhaustion, an aborted connection).
func IsTemporaryAcceptError(err error) bool {
	for _, e := range []unix.Errno{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.ECONNABORTED, unix.EINTR, unix.EAGAIN} {
		if isErrno(err, e) {
			return true
		}
	}
	return false
}

func isErrno(err error, e unix.Errno) bool {
	return errors.Is(err, e)
}
