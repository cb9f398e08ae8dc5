//go:build linux && !kalpc_stub

package sys

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Seals.
const (
	SealShrink      = unix.F_SEAL_SHRINK
	SealGrow        = unix.F_SEAL_GROW
	SealSeal        = unix.F_SEAL_SEAL
	SealWrite       = unix.F_SEAL_WRITE
	SealFutureWrite = unix.F_SEAL_FUTURE_WRITE
)

// Memory protections for Mmap.
const (
	ProtRead  = unix.PROT_READ
	ProtWrite = unix.PROT_WRITE
)

// MemfdCreate wraps memfd_create(2) with MFD_CLOEXEC|MFD_ALLOW_SEALING, and
// MFD_NOEXEC_SEAL where the kernel has it (Linux 6.3+), then sizes the file
// with ftruncate(2). The caller owns the returned descriptor.
func MemfdCreate(name string, size int64) (int, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_NOEXEC_SEAL)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return -1, os.NewSyscallError("memfd_create", err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		_ = unix.Close(fd)
		return -1, os.NewSyscallError("ftruncate", err)
	}
	return fd, nil
}

// Ftruncate wraps ftruncate(2).
func Ftruncate(fd int, size int64) error {
	return os.NewSyscallError("ftruncate", unix.Ftruncate(fd, size))
}

// AddSeals wraps fcntl(2) F_ADD_SEALS.
func AddSeals(fd, seals int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals)
	return os.NewSyscallError("fcntl(F_ADD_SEALS)", err)
}

// GetSeals wraps fcntl(2) F_GET_SEALS. It fails (EINVAL) for descriptors
// that cannot carry seals: anything but a memfd or shmem file.
func GetSeals(fd int) (int, error) {
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return 0, os.NewSyscallError("fcntl(F_GET_SEALS)", err)
	}
	return seals, nil
}

// FileSize wraps fstat(2) and returns the size of a regular file, or an
// error for any other kind of file.
func FileSize(fd int) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, os.NewSyscallError("fstat", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, errors.New("not a regular file (memfd)")
	}
	return st.Size, nil
}

// Mmap wraps mmap(2) with MAP_SHARED for the first size bytes of fd.
func Mmap(fd int, size int, prot int) ([]byte, error) {
	b, err := unix.Mmap(fd, 0, size, prot, unix.MAP_SHARED)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return b, nil
}

// Munmap wraps munmap(2).
func Munmap(b []byte) error {
	return os.NewSyscallError("munmap", unix.Munmap(b))
}

// Allocate wraps fallocate(2) (mode 0) over the first size bytes of fd: every
// page of a memfd is allocated now, charged to the calling process's memory
// cgroup, instead of when some process first touches it.
func Allocate(fd int, size int64) error {
	for {
		err := unix.Fallocate(fd, 0, 0, size)
		if err == unix.EINTR {
			continue
		}
		return os.NewSyscallError("fallocate", err)
	}
}

// MmapPopulate is Mmap with MAP_POPULATE: the page tables are filled now,
// so that later accesses take no page fault.
func MmapPopulate(fd int, size int, prot int) ([]byte, error) {
	b, err := unix.Mmap(fd, 0, size, prot, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return b, nil
}

// Filesystem kinds a memfd may live on, from fstatfs(2).
const (
	FSTmpfs     = unix.TMPFS_MAGIC
	FSHugetlbfs = unix.HUGETLBFS_MAGIC
)

// FSType returns the magic number of the filesystem fd lives on.
func FSType(fd int) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return 0, os.NewSyscallError("fstatfs", err)
	}
	return st.Type, nil
}

// Blank replaces the pages of mapping b, in place, with private anonymous
// zero pages (mmap(2) MAP_FIXED): whatever file b mapped is no longer
// reachable through it, yet every address of b stays valid, so code still
// reading or writing through b never faults. Reads take the shared zero
// page; writes allocate private pages. Unmap b with Munmap as usual.
func Blank(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	_, _, errno := unix.Syscall6(unix.SYS_MMAP, addr, uintptr(len(b)),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED, ^uintptr(0), 0)
	if errno != 0 {
		return os.NewSyscallError("mmap(MAP_FIXED)", errno)
	}
	return nil
}

// MaxMapCount returns the kernel's per-process limit on memory mappings
// (vm.max_map_count), or 0 if it cannot be read.
func MaxMapCount() int {
	b, err := os.ReadFile("/proc/sys/vm/max_map_count")
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return n
}

// FileID returns the device and inode numbers of fd's file.
func FileID(fd int) (dev, ino uint64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, 0, os.NewSyscallError("fstat", err)
	}
	return st.Dev, st.Ino, nil
}

// Missing returns the offset of the first page of mapping b that is not in
// memory (mincore(2)): a page never allocated, or swapped out. It returns
// len(b) when every page is there.
func Missing(b []byte) (int64, error) {
	const window = 64 << 20 // mincore's vector: one byte per page
	page := os.Getpagesize()
	vec := make([]byte, min(len(b), window)/page+1)
	for off := 0; off < len(b); off += window {
		chunk := b[off:min(off+window, len(b))]
		v := vec[:(len(chunk)+page-1)/page]
		_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(chunk))), uintptr(len(chunk)), uintptr(unsafe.Pointer(unsafe.SliceData(v))))
		if errno != 0 {
			return 0, os.NewSyscallError("mincore", errno)
		}
		for i, r := range v {
			if r&1 == 0 {
				return int64(off + i*page), nil
			}
		}
	}
	return int64(len(b)), nil
}

// populateOff is set once the kernel refused MADV_POPULATE_WRITE (before
// Linux 5.14): Prefault does nothing from then on.
var populateOff atomic.Bool

// Prefault makes the pages of b that are not in memory (mincore(2)) present
// and writable with madvise(2) MADV_POPULATE_WRITE: one system call per run
// of missing pages instead of a page fault for each page when b is first
// written (a page fault is costly, more so in a virtual machine). Pages
// already there are left alone. Only whole pages inside b are touched, so b
// may be any private anonymous memory, such as Go heap memory just
// allocated and not yet written. It does nothing where the kernel lacks
// MADV_POPULATE_WRITE; errors are ignored (the write faults instead).
func Prefault(b []byte) {
	if populateOff.Load() || len(b) == 0 {
		return
	}
	const chunkPages = 512
	page := uintptr(os.Getpagesize())
	base := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	start := (base + page - 1) &^ (page - 1)
	end := (base + uintptr(len(b))) &^ (page - 1)
	var vec [chunkPages]byte
	for chunk := start; chunk < end; chunk += chunkPages * page {
		n := min((end-chunk)/page, chunkPages)
		//nolint:gosec // the address is of live memory b holds
		_, _, errno := unix.Syscall(unix.SYS_MINCORE, chunk, n*page, uintptr(unsafe.Pointer(&vec[0])))
		if errno != 0 {
			return
		}
		for i := uintptr(0); i < n; {
			if vec[i]&1 != 0 {
				i++
				continue
			}
			j := i + 1
			for j < n && vec[j]&1 == 0 {
				j++
			}
			_, _, errno := unix.Syscall(unix.SYS_MADVISE, chunk+i*page, (j-i)*page, unix.MADV_POPULATE_WRITE)
			if errno == unix.EINVAL {
				populateOff.Store(true)
				return
			}
			i = j
		}
	}
	runtime.KeepAlive(b)
}

// DataEnd returns where the data that starts at off ends in fd: the
// offset of the next hole (lseek(2) SEEK_HOLE). Pages swapped out count as
// data; pages allocated by fallocate(2) but never written count as holes.
func DataEnd(fd int, off int64) (int64, error) {
	end, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil {
		return 0, os.NewSyscallError("lseek(SEEK_HOLE)", err)
	}
	return end, nil
}
