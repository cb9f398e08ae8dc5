//go:build !linux || kalpc_stub

package sys

// Seals (Linux values; unused off Linux).
const (
	SealShrink      = 0x2
	SealGrow        = 0x4
	SealSeal        = 0x1
	SealWrite       = 0x8
	SealFutureWrite = 0x10
)

// Memory protections for Mmap (Linux values; unused off Linux).
const (
	ProtRead  = 0x1
	ProtWrite = 0x2
)

// Filesystem kinds a memfd may live on (Linux values; unused off Linux).
const (
	FSTmpfs     = 0x1021994
	FSHugetlbfs = 0x958458f6
)

// MemfdCreate returns an error wrapping errors.ErrUnsupported.
func MemfdCreate(string, int64) (int, error) { return -1, errUnsupported }

// Ftruncate returns an error wrapping errors.ErrUnsupported.
func Ftruncate(int, int64) error { return errUnsupported }

// AddSeals returns an error wrapping errors.ErrUnsupported.
func AddSeals(int, int) error { return errUnsupported }

// GetSeals returns an error wrapping errors.ErrUnsupported.
func GetSeals(int) (int, error) { return 0, errUnsupported }

// FileSize returns an error wrapping errors.ErrUnsupported.
func FileSize(int) (int64, error) { return 0, errUnsupported }

// Mmap returns an error wrapping errors.ErrUnsupported.
func Mmap(int, int, int) ([]byte, error) { return nil, errUnsupported }

// Munmap returns an error wrapping errors.ErrUnsupported.
func Munmap([]byte) error { return errUnsupported }

// Allocate returns an error wrapping errors.ErrUnsupported.
func Allocate(int, int64) error { return errUnsupported }

// MmapPopulate returns an error wrapping errors.ErrUnsupported.
func MmapPopulate(int, int, int) ([]byte, error) { return nil, errUnsupported }

// FSType returns an error wrapping errors.ErrUnsupported.
func FSType(int) (int64, error) { return 0, errUnsupported }

// Blank returns an error wrapping errors.ErrUnsupported.
func Blank([]byte) error { return errUnsupported }

// MaxMapCount returns 0 (unknown).
func MaxMapCount() int { return 0 }

// FileID returns an error wrapping errors.ErrUnsupported.
func FileID(int) (dev, ino uint64, err error) { return 0, 0, errUnsupported }

// Missing returns an error wrapping errors.ErrUnsupported.
func Missing([]byte) (int64, error) { return 0, errUnsupported }

// DataEnd returns an error wrapping errors.ErrUnsupported.
func DataEnd(int, int64) (int64, error) { return 0, errUnsupported }

// Prefault does nothing.
func Prefault([]byte) {}
