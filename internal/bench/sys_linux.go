package bench

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// This file is the package's only importer of golang.org/x/sys/unix: the raw
// SOCK_SEQPACKET baseline and resource usage.

// Usage is a process's resource usage as reported by getrusage(2).
type Usage struct {
	// UserNS is the user CPU time in nanoseconds.
	UserNS int64 `json:"user_ns"`
	// SystemNS is the system CPU time in nanoseconds.
	SystemNS int64 `json:"system_ns"`
	// MaxRSSBytes is the peak resident set size in bytes.
	MaxRSSBytes int64 `json:"max_rss_bytes"`
}

// CPU returns user plus system time.
func (u Usage) CPU() time.Duration { return time.Duration(u.UserNS + u.SystemNS) }

// Getrusage wraps getrusage(2) for the calling process.
func Getrusage() (Usage, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return Usage{}, fmt.Errorf("getrusage: %w", err)
	}
	return Usage{
		UserNS:      ru.Utime.Nano(),
		SystemNS:    ru.Stime.Nano(),
		MaxRSSBytes: ru.Maxrss * 1024, // kilobytes on Linux
	}, nil
}

// seqpacketListen creates a blocking AF_UNIX SOCK_SEQPACKET socket listening
// at path.
func seqpacketListen(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("listen %s: %w", path, err)
	}
	return fd, nil
}

// seqpacketAccept wraps accept4(2) on a blocking listening socket.
func seqpacketAccept(lfd int) (int, error) {
	for {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("accept: %w", err)
		}
		return fd, nil
	}
}

// seqpacketDial connects a blocking AF_UNIX SOCK_SEQPACKET socket to path.
func seqpacketDial(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("connect %s: %w", path, err)
	}
	return fd, nil
}

// recordRead wraps read(2): on a SOCK_SEQPACKET socket it returns one record.
// A record longer than b is an error (its tail would be lost), as is EOF.
func recordRead(fd int, b []byte) (int, error) {
	for {
		n, _, flags, _, err := unix.Recvmsg(fd, b, nil, 0)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, fmt.Errorf("recvmsg: %w", err)
		case flags&unix.MSG_TRUNC != 0:
			return 0, fmt.Errorf("record larger than the %d B buffer", len(b))
		case n == 0:
			return 0, errors.New("peer closed the socket")
		}
		return n, nil
	}
}

// recordWrite wraps send(2): one call, one record.
func recordWrite(fd int, b []byte) error {
	for {
		err := unix.Sendmsg(fd, b, nil, nil, unix.MSG_NOSIGNAL)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sendmsg: %w", err)
		}
		return nil
	}
}

// closeFD wraps close(2).
func closeFD(fd int) error { return unix.Close(fd) }

// processAlive reports whether a process with the given pid exists (and is
// not a zombie).
func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	if err != nil && !errors.Is(err, unix.EPERM) {
		return false
	}
	return !isZombie(pid)
}

// killGroup sends SIGKILL to the process group pgid.
func killGroup(pgid int) error {
	if pgid <= 0 {
		return nil
	}
	err := unix.Kill(-pgid, unix.SIGKILL)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// kernelRelease returns uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
