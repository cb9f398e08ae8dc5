//go:build linux && !kalpc_stub

package sys

import (
	"os"

	"golang.org/x/sys/unix"
)

// Readiness is a private epoll instance that reports one socket becoming
// readable, once per arming (EPOLLONESHOT). A thread blocked in Wait is only
// woken while the socket is armed, so another thread can read the socket
// itself (after Disarm) without the kernel also waking the waiter on every
// datagram.
type Readiness struct {
	epfd int
	fd   int
}

// NewReadiness wraps epoll_create1(2) and adds fd to the new instance,
// armed or not. The caller keeps owning fd and must keep it open until
// Close.
func NewReadiness(fd int, armed bool) (*Readiness, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	r := &Readiness{epfd: epfd, fd: fd}
	var events uint32
	if armed {
		events = unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if err := r.ctl(unix.EPOLL_CTL_ADD, events); err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	return r, nil
}

func (r *Readiness) ctl(op int, events uint32) error {
	ev := unix.EpollEvent{Events: events | unix.EPOLLONESHOT, Fd: int32(r.fd)}
	return os.NewSyscallError("epoll_ctl", unix.EpollCtl(r.epfd, op, r.fd, &ev))
}

// Arm wraps epoll_ctl(2) EPOLL_CTL_MOD: the next Wait returns once the socket
// is readable, hung up or in error, including if it already is.
func (r *Readiness) Arm() error { return r.ctl(unix.EPOLL_CTL_MOD, unix.EPOLLIN|unix.EPOLLRDHUP) }

// Disarm wraps epoll_ctl(2) EPOLL_CTL_MOD: datagrams arriving from now on do
// not wake Wait (a hang-up still may).
func (r *Readiness) Disarm() error { return r.ctl(unix.EPOLL_CTL_MOD, 0) }

// Wait wraps epoll_wait(2): it blocks until the armed socket is ready, which
// also disarms it.
func (r *Readiness) Wait() error {
	var ev [1]unix.EpollEvent
	for {
		_, err := unix.EpollWait(r.epfd, ev[:], -1)
		if err == unix.EINTR {
			continue
		}
		return os.NewSyscallError("epoll_wait", err)
	}
}

// Close closes the epoll instance (not the socket).
func (r *Readiness) Close() error { return os.NewSyscallError("close", unix.Close(r.epfd)) }
