//go:build !linux || kalpc_stub

package sys

// ONoFollow is 0: nothing is opened off Linux.
const ONoFollow = 0

// Flock returns an error wrapping errors.ErrUnsupported.
func Flock(int) error { return errUnsupported }

// SameFile returns an error wrapping errors.ErrUnsupported.
func SameFile(int, string) (bool, error) { return false, errUnsupported }

// IsSocketFile returns an error wrapping errors.ErrUnsupported.
func IsSocketFile(string) (exists, socket bool, err error) { return false, false, errUnsupported }
