package alpc

import (
	"errors"
	"fmt"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
)

// ErrUnsupported means this platform cannot run kalpc: it needs Linux
// (AF_UNIX SOCK_SEQPACKET sockets, SCM_RIGHTS, memfd sections). It is
// [errors.ErrUnsupported] itself, so errors.Is(err, errors.ErrUnsupported)
// holds as well.
//
// The package compiles on every platform (macOS and Windows included) so
// that an application importing it builds on a developer's machine; off
// Linux every entry point that needs the kernel ([Listen], [Dial],
// [FileConn], [SocketPair], [Connect], [Publish], [NewRegion]) returns an
// error wrapping ErrUnsupported, and [Supported] says so up front.
var ErrUnsupported = errors.ErrUnsupported

// Supported returns nil where kalpc can run (Linux), and elsewhere an error
// wrapping [ErrUnsupported] that says kalpc needs Linux. An application
// built for several platforms can test it once and take another path (a
// network connection) instead of kalpc.
func Supported() error {
	if err := sys.Supported(); err != nil {
		return fmt.Errorf("alpc: %w", err)
	}
	return nil
}

// platformError is nil on Linux and otherwise the error that says kalpc
// needs Linux (it matches ErrUnsupported); Connect and Publish wrap it in
// a *BrokerError.
func platformError() error { return sys.Supported() }

// checkPlatform is the first step of every entry point that needs the
// kernel: off Linux it fails with an error naming the operation and
// wrapping ErrUnsupported.
func checkPlatform(op string) error {
	if err := sys.Supported(); err != nil {
		return fmt.Errorf("alpc: %s: %w", op, err)
	}
	return nil
}
