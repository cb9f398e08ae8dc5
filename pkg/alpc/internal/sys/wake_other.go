//go:build !linux || kalpc_stub

package sys

// Eventfd returns an error wrapping errors.ErrUnsupported.
func Eventfd() (int, error) { return -1, errUnsupported }

// EventfdSignal does nothing: Eventfd never succeeds off Linux.
func EventfdSignal(int) {}

// PollWake returns an error wrapping errors.ErrUnsupported.
func PollWake(int, int16, int) (woken bool, err error) { return false, errUnsupported }

// IsTemporaryAcceptError reports false: accept never runs off Linux.
func IsTemporaryAcceptError(error) bool { return false }
