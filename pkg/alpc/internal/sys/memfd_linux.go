package sys

import (
	"errors"
	"os"

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
