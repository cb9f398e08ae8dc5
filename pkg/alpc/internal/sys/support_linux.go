//go:build linux && !kalpc_stub

package sys

// Supported returns nil: Linux has every system call the library needs.
// Elsewhere it returns an error wrapping errors.ErrUnsupported.
func Supported() error { return nil }
