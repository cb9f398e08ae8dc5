//go:build !linux || kalpc_stub

package sys

import "context"

// Errno values callers compare against (dummy values: no wrapper here
// returns them).
const (
	EAGAIN       = errno(11)
	EINTR        = errno(4)
	EPIPE        = errno(32)
	ECONNRESET   = errno(104)
	EBADF        = errno(9)
	ENOENT       = errno(2)
	EWOULDBLOCK  = EAGAIN
	ECONNREFUSED = errno(111)
)

// Flags for Sendmsg and Recvmsg (Linux values; unused off Linux).
const (
	MsgDontWait    = 0x40
	MsgNoSignal    = 0x4000
	MsgTrunc       = 0x20
	MsgCtrunc      = 0x8
	MsgCmsgCloexec = 0x40000000
	PollIn         = 0x1
	PollOut        = 0x4
)

// SeqpacketPair returns an error wrapping errors.ErrUnsupported.
func SeqpacketPair() (a, b int, err error) { return -1, -1, errUnsupported }

// SeqpacketSocket returns an error wrapping errors.ErrUnsupported.
func SeqpacketSocket(bool) (int, error) { return -1, errUnsupported }

// Bind returns an error wrapping errors.ErrUnsupported.
func Bind(int, string) error { return errUnsupported }

// Listen returns an error wrapping errors.ErrUnsupported.
func Listen(int, int) error { return errUnsupported }

// Connect returns an error wrapping errors.ErrUnsupported.
func Connect(int, string) error { return errUnsupported }

// Accept4 returns an error wrapping errors.ErrUnsupported.
func Accept4(int) (int, error) { return -1, errUnsupported }

// SetNonblock returns an error wrapping errors.ErrUnsupported.
func SetNonblock(int, bool) error { return errUnsupported }

// Shutdown returns an error wrapping errors.ErrUnsupported.
func Shutdown(int) error { return errUnsupported }

// Close returns an error wrapping errors.ErrUnsupported: no descriptor
// was ever opened by this package.
func Close(int) error { return errUnsupported }

// CloseAll does nothing: no descriptor was ever received.
func CloseAll([]int) {}

// DupCloexec returns an error wrapping errors.ErrUnsupported.
func DupCloexec(int) (int, error) { return -1, errUnsupported }

// PeerCred returns an error wrapping errors.ErrUnsupported.
func PeerCred(int) (Cred, error) { return Cred{}, errUnsupported }

// IsSeqpacket returns an error wrapping errors.ErrUnsupported.
func IsSeqpacket(int) error { return errUnsupported }

// SetSendBuffer returns an error wrapping errors.ErrUnsupported.
func SetSendBuffer(int, int) error { return errUnsupported }

// Sendmsg returns an error wrapping errors.ErrUnsupported.
func Sendmsg(int, []byte, []byte, []int, int) error { return errUnsupported }

// Recvmsg returns an error wrapping errors.ErrUnsupported.
func Recvmsg(int, []byte, []byte, int) (n, oobn, recvflags int, err error) {
	return 0, 0, 0, errUnsupported
}

// OOBSpace returns the Linux control-message size for n descriptors.
func OOBSpace(n int) int {
	if n <= 0 {
		return 0
	}
	return 16 + (4*n+7)&^7
}

// ParseRights returns an error wrapping errors.ErrUnsupported for a
// non-empty buffer.
func ParseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	return nil, errUnsupported
}

// WaitFD returns an error wrapping errors.ErrUnsupported.
func WaitFD(context.Context, int, int16) error { return errUnsupported }
