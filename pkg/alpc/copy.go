package alpc

import (
	"unsafe"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
)

// Private copies of large payloads
//
// Request.Payload and Call hand the caller a copy of a payload that arrived
// in the peer's section: new Go memory the caller owns, which the peer can
// no longer change. That copy is the default path's one unavoidable cost
// beyond the socket's. A large Go allocation often lands on pages the
// runtime's scavenger gave back to the kernel, and writing them then takes
// a page fault per 4 KiB page: measured in docs/performance.md, that made a
// 16 MiB copy several times slower than a copy into memory already there
// (and a page fault costs far more inside a virtual machine). So privateCopy
// allocates without zeroing, makes the missing pages present in one
// madvise(2) MADV_POPULATE_WRITE per run of missing pages, and only then
// copies: the same pages and bytes, one system call instead of hundreds of
// faults. Nothing is pooled: the copy belongs to the caller and the garbage
// collector frees it.

// prefaultMin is the smallest copy that privateCopy prefaults. Smaller
// allocations share spans with other objects and rarely land on fresh
// pages; a copy this size is 16 pages, and a mincore(2) call costs less than
// one fault.
const prefaultMin = 64 << 10

// mallocgc is the Go allocator. With needzero false it returns memory that
// is not cleared (as append does before it copies), so the pages are not
// touched before Prefault. The runtime keeps this entry point and its
// signature for the packages that link to it (go.dev/issue/67401).
//
//go:linkname mallocgc runtime.mallocgc
func mallocgc(size uintptr, typ unsafe.Pointer, needzero bool) unsafe.Pointer

// privateCopy returns a copy of src in new Go memory that the caller owns.
func privateCopy(src []byte) []byte {
	if len(src) < prefaultMin {
		return append([]byte(nil), src...)
	}
	// A nil type allocates memory without pointers (as for []byte); every
	// byte of it is written by the copy below before anyone reads it.
	dst := unsafe.Slice((*byte)(mallocgc(uintptr(len(src)), nil, false)), len(src))
	sys.Prefault(dst)
	copy(dst, src)
	return dst
}
