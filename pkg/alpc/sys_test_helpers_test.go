package alpc

import "os"

// ftruncate tries to shrink a descriptor's file, as a hostile peer would.
func ftruncate(fd int, size int64) error {
	f := os.NewFile(uintptr(fd), "section")
	// os.File takes ownership; duplicate semantics are not needed because
	// the test keeps fd open: avoid closing it by not calling f.Close.
	return f.Truncate(size)
}
