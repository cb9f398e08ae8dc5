//go:build linux && !kalpc_stub

package sys

import (
	"context"
	"errors"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Errno values callers compare against.
const (
	EAGAIN       = unix.EAGAIN
	EINTR        = unix.EINTR
	EPIPE        = unix.EPIPE
	ECONNRESET   = unix.ECONNRESET
	EBADF        = unix.EBADF
	ENOENT       = unix.ENOENT
	EWOULDBLOCK  = unix.EWOULDBLOCK
	ECONNREFUSED = unix.ECONNREFUSED
)

// Flags for Sendmsg and Recvmsg.
const (
	MsgDontWait    = unix.MSG_DONTWAIT
	MsgNoSignal    = unix.MSG_NOSIGNAL
	MsgTrunc       = unix.MSG_TRUNC
	MsgCtrunc      = unix.MSG_CTRUNC
	MsgCmsgCloexec = unix.MSG_CMSG_CLOEXEC
	PollIn         = unix.POLLIN
	PollOut        = unix.POLLOUT
)

// SeqpacketPair wraps socketpair(2) for a connected AF_UNIX SOCK_SEQPACKET pair.
func SeqpacketPair() (a, b int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, os.NewSyscallError("socketpair", err)
	}
	return fds[0], fds[1], nil
}

// SeqpacketSocket wraps socket(2) for an AF_UNIX SOCK_SEQPACKET socket.
func SeqpacketSocket(nonblock bool) (int, error) {
	typ := unix.SOCK_SEQPACKET | unix.SOCK_CLOEXEC
	if nonblock {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	return fd, nil
}

// Bind wraps bind(2) for a Unix socket path.
func Bind(fd int, path string) error {
	return os.NewSyscallError("bind", unix.Bind(fd, &unix.SockaddrUnix{Name: path}))
}

// Listen wraps listen(2).
func Listen(fd, backlog int) error {
	return os.NewSyscallError("listen", unix.Listen(fd, backlog))
}

// Connect wraps connect(2) for a Unix socket path.
func Connect(fd int, path string) error {
	err := unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	if err != nil {
		return os.NewSyscallError("connect", err)
	}
	return nil
}

// Accept4 wraps accept4(2); the new descriptor is close-on-exec and blocking.
func Accept4(fd int) (int, error) {
	nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("accept4", err)
	}
	return nfd, nil
}

// SetNonblock wraps fcntl(2) F_SETFL O_NONBLOCK.
func SetNonblock(fd int, nonblocking bool) error {
	return os.NewSyscallError("fcntl", unix.SetNonblock(fd, nonblocking))
}

// Shutdown wraps shutdown(2) with SHUT_RDWR.
func Shutdown(fd int) error {
	return os.NewSyscallError("shutdown", unix.Shutdown(fd, unix.SHUT_RDWR))
}

// Close wraps close(2).
func Close(fd int) error { return os.NewSyscallError("close", unix.Close(fd)) }

// CloseAll closes every descriptor in fds, ignoring errors; used on error
// paths that must not leak descriptors received from a peer.
func CloseAll(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// DupCloexec wraps fcntl(2) F_DUPFD_CLOEXEC.
func DupCloexec(fd int) (int, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	return nfd, nil
}

// PeerCred wraps getsockopt(2) SO_PEERCRED.
func PeerCred(fd int) (Cred, error) {
	uc, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return Cred{}, os.NewSyscallError("getsockopt", err)
	}
	return Cred{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}, nil
}

// IsSeqpacket reports whether fd is an AF_UNIX SOCK_SEQPACKET socket.
func IsSeqpacket(fd int) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	if typ != unix.SOCK_SEQPACKET {
		return errors.New("not a SOCK_SEQPACKET socket")
	}
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	if dom != unix.AF_UNIX {
		return errors.New("not an AF_UNIX socket")
	}
	return nil
}

// SetSendBuffer wraps setsockopt(2) SO_SNDBUF.
func SetSendBuffer(fd, bytes int) error {
	return os.NewSyscallError("setsockopt", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, bytes))
}

// Sendmsg wraps sendmsg(2): hdr and payload form one datagram (gathered, not
// copied), fds travel as SCM_RIGHTS. It allocates nothing on the common path.
func Sendmsg(fd int, hdr, payload []byte, fds []int, flags int) error {
	var iov [2]unix.Iovec
	var msg unix.Msghdr
	iov[0].Base = unsafe.SliceData(hdr)
	iov[0].SetLen(len(hdr))
	msg.Iov = &iov[0]
	msg.Iovlen = 1
	if len(payload) > 0 {
		iov[1].Base = unsafe.SliceData(payload)
		iov[1].SetLen(len(payload))
		msg.Iovlen = 2
	}
	if len(fds) > 0 {
		oob := unix.UnixRights(fds...)
		msg.Control = unsafe.SliceData(oob)
		msg.SetControllen(len(oob))
	}
	_, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	runtime.KeepAlive(hdr)
	runtime.KeepAlive(payload)
	if e != 0 {
		return os.NewSyscallError("sendmsg", e)
	}
	return nil
}

// Recvmsg wraps recvmsg(2) on a connected socket (no source address is
// decoded).
func Recvmsg(fd int, buf, oob []byte, flags int) (n, oobn, recvflags int, err error) {
	var iov unix.Iovec
	var msg unix.Msghdr
	if len(buf) > 0 {
		iov.Base = unsafe.SliceData(buf)
		iov.SetLen(len(buf))
	}
	msg.Iov = &iov
	msg.Iovlen = 1
	if len(oob) > 0 {
		msg.Control = unsafe.SliceData(oob)
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	runtime.KeepAlive(buf)
	runtime.KeepAlive(oob)
	if e != 0 {
		return 0, 0, 0, os.NewSyscallError("recvmsg", e)
	}
	return int(r), int(msg.Controllen), int(msg.Flags), nil
}

// OOBSpace is the control-message buffer size needed to receive n descriptors.
func OOBSpace(n int) int {
	if n <= 0 {
		return 0
	}
	return unix.CmsgSpace(4 * n)
}

// ParseRights extracts SCM_RIGHTS descriptors from a control-message buffer.
// Every descriptor found is returned; on error they have all been closed
// already, so nothing a peer sent can leak.
func ParseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		// The buffer is malformed; we cannot find the descriptors in it, but
		// the kernel only writes well-formed control messages, so this is
		// unreachable in practice.
		return nil, os.NewSyscallError("recvmsg control message", err)
	}
	var fds []int
	var bad error
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			bad = errors.New("unexpected control message (only SCM_RIGHTS is accepted)")
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			bad = err
			continue
		}
		fds = append(fds, got...)
	}
	if bad != nil {
		CloseAll(fds)
		return nil, bad
	}
	return fds, nil
}

// WaitFD blocks until fd is ready for events (PollIn/PollOut), the peer hangs
// up, the socket is shut down, or ctx ends (then ctx.Err() is returned).
// Readiness of POLLHUP/POLLERR is reported as success; the caller's next
// system call returns the real condition.
func WaitFD(ctx context.Context, fd int, events int16) error {
	if ctx.Done() == nil {
		for {
			_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: events}}, -1)
			if err == unix.EINTR {
				continue
			}
			return os.NewSyscallError("poll", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return os.NewSyscallError("eventfd", err)
	}
	// mu orders the AfterFunc's write against the close below, so the
	// write never lands on a closed (or reused) descriptor number.
	var mu sync.Mutex
	closed := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !closed {
			one := [8]byte{1}
			_, _ = unix.Write(efd, one[:])
		}
	})
	defer func() {
		stop()
		mu.Lock()
		closed = true
		_ = unix.Close(efd)
		mu.Unlock()
	}()
	for {
		pfds := []unix.PollFd{{Fd: int32(fd), Events: events}, {Fd: int32(efd), Events: unix.POLLIN}}
		_, err := unix.Poll(pfds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("poll", err)
		}
		if pfds[1].Revents != 0 {
			return ctx.Err()
		}
		return nil
	}
}
