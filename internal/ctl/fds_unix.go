//go:build unix

package ctl

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// Flags ReadMsgUnix reports for a truncated message or control message.
const (
	msgCtrunc = syscall.MSG_CTRUNC
	msgTrunc  = syscall.MSG_TRUNC
)

// rights returns the SCM_RIGHTS control message carrying f's descriptor.
func rights(f *os.File) ([]byte, error) { return syscall.UnixRights(int(f.Fd())), nil }

// rightsSpace is the control-message buffer size needed to receive n
// descriptors.
func rightsSpace(n int) int { return syscall.CmsgSpace(4 * n) }

// closeFDs closes every descriptor in fds, ignoring errors.
func closeFDs(fds []int) {
	for _, fd := range fds {
		_ = syscall.Close(fd)
	}
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	var bad error
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != syscall.SOL_SOCKET || m.Header.Type != syscall.SCM_RIGHTS {
			bad = errors.New("unexpected control message (only SCM_RIGHTS is accepted)")
			continue
		}
		got, err := syscall.ParseUnixRights(m)
		if err != nil {
			bad = err
			continue
		}
		fds = append(fds, got...)
	}
	if bad != nil {
		closeFDs(fds)
		return nil, bad
	}
	return fds, nil
}

// waitReadable waits, within c's deadline, until a datagram (or the end,
// or an error) is ready on c, without receiving it.
func waitReadable(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var peek [1]byte
	// A deadline or a closed connection comes back as a *net.OpError
	// ("raw-read"), as ReadMsgUnix would report it.
	return rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN
	})
}
