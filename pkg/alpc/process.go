package alpc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
)

// Process-wide bounds. Each connection's Config bounds what one peer can
// make this side hold; a process serving many connections also needs a
// bound on their sum, or peers that each stay inside their own budget can
// together exhaust the kernel's limit on memory mappings (vm.max_map_count:
// the process then dies in the Go runtime) or the pod's memory.

// ProcessLimits bound the shared memory of all the connections of this
// process together. Zero fields take their defaults.
type ProcessLimits struct {
	// MaxMappings is the most memory mappings kalpc holds at once for
	// sections (ours and the peers') and regions peers granted. A section
	// or grant beyond it is refused: a peer's ends its connection with a
	// *ProtocolError naming the limit; one of ours fails the send with a
	// *LimitError. Peers' sections of the same file share one mapping.
	// Defaults to DefaultMaxMappings, lowered to a quarter of
	// vm.max_map_count where that is smaller, so that the Go runtime and
	// the application keep three quarters of the kernel's limit.
	MaxMappings int

	// MaxSectionMemory is the most memory this process puts in the
	// sections it creates to send large messages (memory charged to this
	// process, lent to peers until they release it). A send that needs
	// more waits for releases like one over its connection's
	// MaxSectionBytes. Defaults to half the memory limit of the process's
	// cgroup, or DefaultMaxSectionMemory when there is none.
	MaxSectionMemory int64

	// MaxMappedBytes is the most bytes of peers' sections and granted
	// regions mapped at once (their memory, charged to them, but address
	// space and page tables here). Defaults to DefaultMaxMappedBytes.
	MaxMappedBytes int64
}

// Defaults for ProcessLimits.
const (
	DefaultMaxMappings      = 8192
	DefaultMaxSectionMemory = 16 << 30
	DefaultMaxMappedBytes   = 64 << 30
)

// ProcessUsage is what the process's connections hold against its
// ProcessLimits.
type ProcessUsage struct {
	Mappings      int
	SectionMemory int64
	MappedBytes   int64
}

// SetProcessLimits replaces the process-wide limits; it applies to sections
// and grants made from then on (nothing already mapped is taken back).
func SetProcessLimits(l ProcessLimits) error {
	d := defaultProcessLimits()
	if l.MaxMappings == 0 {
		l.MaxMappings = d.MaxMappings
	}
	if l.MaxSectionMemory == 0 {
		l.MaxSectionMemory = d.MaxSectionMemory
	}
	if l.MaxMappedBytes == 0 {
		l.MaxMappedBytes = d.MaxMappedBytes
	}
	if l.MaxMappings < 0 || l.MaxSectionMemory < 0 || l.MaxMappedBytes < 0 {
		return fmt.Errorf("alpc: process limits %+v: negative value", l)
	}
	proc.mu.Lock()
	proc.lim = l
	proc.mu.Unlock()
	proc.broadcast()
	return nil
}

// GetProcessLimits returns the process-wide limits in force.
func GetProcessLimits() ProcessLimits {
	proc.mu.Lock()
	defer proc.mu.Unlock()
	return proc.lim
}

// GetProcessUsage returns what the process's connections hold now.
func GetProcessUsage() ProcessUsage {
	proc.mu.Lock()
	defer proc.mu.Unlock()
	return ProcessUsage{Mappings: proc.mappings, SectionMemory: proc.sectionMem, MappedBytes: proc.mapped}
}

func defaultProcessLimits() ProcessLimits {
	l := ProcessLimits{
		MaxMappings:      DefaultMaxMappings,
		MaxSectionMemory: DefaultMaxSectionMemory,
		MaxMappedBytes:   DefaultMaxMappedBytes,
	}
	if n := sys.MaxMapCount(); n > 0 && n/4 < l.MaxMappings {
		l.MaxMappings = max(n/4, 1)
	}
	if m := cgroupMemoryLimit(); m > 0 && m/2 < l.MaxSectionMemory {
		l.MaxSectionMemory = max(m/2, minSectionSize)
	}
	return l
}

// cgroupMemoryLimit returns the memory limit of the cgroup this process is
// in (v2 memory.max, or v1 memory.limit_in_bytes), or 0 if it has none or
// it cannot be read.
func cgroupMemoryLimit() int64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		// hierarchy-ID:controller-list:path
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(f) != 3 {
			continue
		}
		var file string
		switch {
		case f[0] == "0" && f[1] == "":
			file = "/sys/fs/cgroup" + f[2] + "/memory.max"
			if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
				file = "/sys/fs/cgroup/unified" + f[2] + "/memory.max"
			}
		case strings.Contains(","+f[1]+",", ",memory,"):
			file = "/sys/fs/cgroup/memory" + f[2] + "/memory.limit_in_bytes"
		default:
			continue
		}
		v, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<62 {
			continue // "max", or v1's "unlimited" (a page-rounded int64 max)
		}
		return n
	}
	return 0
}

// procBudget is the process-wide account of section and grant mappings.
type procBudget struct {
	mu         sync.Mutex
	lim        ProcessLimits
	mappings   int
	sectionMem int64
	mapped     int64
	// shared are peers' sections mapped read-only, by file: a file sent
	// as many sections (on one connection or many) is mapped once.
	shared  map[fileKey]*peerMap
	changed chan struct{} // closed (and replaced) when something is freed
	// waiters counts sends waiting for the process's room: while any
	// does, connections give back idle sections instead of keeping them.
	waiters atomic.Int32
}

func (b *procBudget) waiting(delta int32) { b.waiters.Add(delta) }

func (b *procBudget) pressed() bool { return b.waiters.Load() > 0 }

var proc = &procBudget{
	lim:     defaultProcessLimits(),
	shared:  make(map[fileKey]*peerMap),
	changed: make(chan struct{}),
}

func (b *procBudget) broadcast() {
	b.mu.Lock()
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// reserveOut accounts for a section of size bytes this process creates,
// or returns the channel to wait on for room.
func (b *procBudget) reserveOut(size int64) (wait <-chan struct{}, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case size > b.lim.MaxSectionMemory:
		return nil, &LimitError{Limit: "MaxSectionMemory", Value: b.lim.MaxSectionMemory,
			Err: fmt.Errorf("%w: a %d-byte section cannot fit in the process's section memory", ErrTooLarge, size)}
	case b.mappings+1 > b.lim.MaxMappings, b.sectionMem+size > b.lim.MaxSectionMemory:
		return b.changed, nil
	}
	b.mappings++
	b.sectionMem += size
	return nil, nil
}

func (b *procBudget) releaseOut(size int64) {
	b.mu.Lock()
	b.mappings--
	b.sectionMem -= size
	b.mu.Unlock()
	b.broadcast()
}

// reserveIn accounts for a mapping of size bytes of a peer's memory.
func (b *procBudget) reserveIn(size int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reserveInLocked(size)
}

func (b *procBudget) reserveInLocked(size int64) error {
	if b.mappings+1 > b.lim.MaxMappings {
		return protocolErrorf("the process holds %d shared-memory mappings, its limit (ProcessLimits.MaxMappings)", b.lim.MaxMappings)
	}
	if b.mapped+size > b.lim.MaxMappedBytes {
		return protocolErrorf("mapping %d more bytes of peers' memory would exceed the process's limit of %d (ProcessLimits.MaxMappedBytes)", size, b.lim.MaxMappedBytes)
	}
	b.mappings++
	b.mapped += size
	return nil
}

func (b *procBudget) releaseIn(size int64) {
	b.mu.Lock()
	b.mappings--
	b.mapped -= size
	b.mu.Unlock()
	b.broadcast()
}

// fileKey names a file: a memfd sent many times is one key.
type fileKey struct{ dev, ino uint64 }

// peerMap is a read-only mapping of a peer's section file, shared by every
// section of this process that names the file.
type peerMap struct {
	key  fileKey
	mem  []byte
	refs int
}

// mapShared maps the first size bytes of fd read-only, or takes another
// reference on the mapping of the same file if there is one.
func (b *procBudget) mapShared(what string, fd int, size int64) (*peerMap, error) {
	dev, ino, err := sys.FileID(fd)
	if err != nil {
		return nil, protocolErrorf("%s: %v", what, err)
	}
	key := fileKey{dev, ino}
	b.mu.Lock()
	if m := b.shared[key]; m != nil && int64(len(m.mem)) == size {
		m.refs++
		b.mu.Unlock()
		return m, nil
	}
	if err := b.reserveInLocked(size); err != nil {
		b.mu.Unlock()
		return nil, err
	}
	b.mu.Unlock()
	mem, err := sys.Mmap(fd, int(size), sys.ProtRead)
	if err != nil {
		b.releaseIn(size)
		return nil, protocolErrorf("%s cannot be mapped: %v", what, err)
	}
	if err := checkAllocated(what, fd, mem); err != nil {
		_ = sys.Munmap(mem)
		b.releaseIn(size)
		return nil, err
	}
	m := &peerMap{key: key, mem: mem, refs: 1}
	b.mu.Lock()
	if b.shared[key] == nil {
		b.shared[key] = m
	}
	b.mu.Unlock()
	return m, nil
}

// unmapShared drops a reference on m, unmapping it with the last.
func (b *procBudget) unmapShared(m *peerMap) {
	b.mu.Lock()
	m.refs--
	last := m.refs == 0
	if last && b.shared[m.key] == m {
		delete(b.shared, m.key)
	}
	b.mu.Unlock()
	if last {
		_ = sys.Munmap(m.mem)
		b.releaseIn(int64(len(m.mem)))
	}
}

// checkPeerMemory validates a descriptor a peer sent as shared memory (a
// section or a grant) before it is mapped: a memfd on tmpfs (hugetlbfs
// files are refused: holes can be punched in them whatever their seals,
// and a read of a hole faults with SIGBUS), carrying the seals in want,
// and of exactly size bytes. Once mapped, checkAllocated checks its pages.
//
// writeSealed also requires F_SEAL_WRITE or F_SEAL_FUTURE_WRITE, without
// which the peer could punch holes (fallocate, madvise MADV_REMOVE) after
// the check.
func checkPeerMemory(what string, fd int, size uint64, want int, writeSealed bool) error {
	fs, err := sys.FSType(fd)
	if err != nil {
		return protocolErrorf("%s: %v", what, err)
	}
	switch fs {
	case sys.FSTmpfs:
	case sys.FSHugetlbfs:
		return protocolErrorf("%s is a hugetlb memfd (refused: a hole punched in it would fault the reader with SIGBUS)", what)
	default:
		return protocolErrorf("%s is not a memfd (filesystem %#x)", what, fs)
	}
	seals, err := sys.GetSeals(fd)
	if err != nil {
		return protocolErrorf("%s is not a sealable memfd: %v", what, err)
	}
	if seals&want != want {
		return protocolErrorf("%s is not sealed against shrinking, growing and reseal (seals %#x, want %#x)", what, seals, want)
	}
	if writeSealed && seals&writeSeals == 0 {
		return protocolErrorf("%s is not sealed against writes through new mappings (F_SEAL_FUTURE_WRITE; seals %#x)", what, seals)
	}
	got, err := sys.FileSize(fd)
	if err != nil {
		return protocolErrorf("%s: %v", what, err)
	}
	if size == 0 || uint64(got) != size {
		return protocolErrorf("%s is %d bytes, announced %d", what, got, size)
	}
	return nil
}

// checkAllocated checks that every page of a peer's file mapped at mem is
// allocated. Pages a peer allocated are charged to the peer's memory
// cgroup; a hole would be allocated by our first access and charged to
// ours, and stay charged as long as the peer keeps the file open (the
// receiver of a sparse file pays for the sender's memory). A page in
// memory (mincore) was allocated; one that is not must have been swapped
// out (still charged to its owner): lseek SEEK_HOLE counts swapped pages
// as data and unallocated ones as holes.
func checkAllocated(what string, fd int, mem []byte) error {
	size := int64(len(mem))
	for off := int64(0); off < size; {
		miss, err := sys.Missing(mem[off:])
		if err != nil {
			return protocolErrorf("%s: %v", what, err)
		}
		if off += miss; off >= size {
			return nil
		}
		end, err := sys.DataEnd(fd, off)
		if err != nil {
			return protocolErrorf("%s: %v", what, err)
		}
		if end <= off {
			return protocolErrorf("%s has unallocated pages from offset %d (a sender must allocate its memory: a hole read here would be charged to this side)", what, off)
		}
		off = end
	}
	return nil
}

// allocWait returns a channel closed once WriteTimeout has passed since the
// first wait began (nil, never closed, without a WriteTimeout), and a stop
// function.
func (c *Conn) allocWait() (<-chan time.Time, func()) {
	if c.cfg.WriteTimeout <= 0 {
		return nil, func() {}
	}
	t := time.NewTimer(c.cfg.WriteTimeout)
	return t.C, func() { t.Stop() }
}
