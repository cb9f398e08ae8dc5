//go:build !linux || kalpc_stub

package sys

// Readiness stands in for the Linux epoll instance; NewReadiness always
// fails off Linux.
type Readiness struct{}

// NewReadiness returns an error wrapping errors.ErrUnsupported.
func NewReadiness(int, bool) (*Readiness, error) { return nil, errUnsupported }

// Arm returns an error wrapping errors.ErrUnsupported.
func (*Readiness) Arm() error { return errUnsupported }

// Disarm returns an error wrapping errors.ErrUnsupported.
func (*Readiness) Disarm() error { return errUnsupported }

// Wait returns an error wrapping errors.ErrUnsupported.
func (*Readiness) Wait() error { return errUnsupported }

// Close returns an error wrapping errors.ErrUnsupported.
func (*Readiness) Close() error { return errUnsupported }
