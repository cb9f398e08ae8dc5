//go:build !linux || kalpc_stub

package sys

import (
	"errors"
	"fmt"
	"runtime"
)

// unsupportedError is what Supported and every system call wrapper return
// off Linux. It matches errors.ErrUnsupported.
type unsupportedError struct{}

func (unsupportedError) Error() string {
	s := "kalpc needs Linux (AF_UNIX SOCK_SEQPACKET sockets, SCM_RIGHTS, memfd sections); " +
		runtime.GOOS + "/" + runtime.GOARCH + " is not supported"
	if runtime.GOOS == "linux" {
		s += " (built with -tags kalpc_stub)"
	}
	return s
}

func (unsupportedError) Unwrap() error { return errors.ErrUnsupported }

var errUnsupported error = unsupportedError{}

// Supported returns an error wrapping errors.ErrUnsupported: kalpc's
// channels, sections and regions need Linux system calls. The package
// compiles off Linux only so that programs importing pkg/alpc build there.
func Supported() error { return errUnsupported }

// errno stands in for unix.Errno values, which do not exist on every
// platform. Nothing here returns them; callers compare errors against them.
type errno uintptr

func (e errno) Error() string { return fmt.Sprintf("errno %d", uintptr(e)) }
