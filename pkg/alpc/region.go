package alpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// Direct access: the Linux analog of ALPC's reads and writes into a peer's
// memory. A process creates a Region (a memfd it owns), and grants it to its
// peer read-only or read-write; the peer reads and writes it in place.
// Nothing else of a process is reachable. Grants must be allowed on both
// sides (Config.AllowDirectAccess).

// Access is what a grant allows the peer to do with a region.
type Access uint32

const (
	// ReadOnly grants let the peer read the region. The region is sealed
	// F_SEAL_FUTURE_WRITE when first granted read-only, so neither the peer
	// nor anyone else can map it writable again; the owner's existing
	// mapping stays writable.
	ReadOnly Access = 1
	// ReadWrite grants let the peer read and write the region.
	ReadWrite Access = 2
)

func (a Access) String() string {
	switch a {
	case ReadOnly:
		return "read-only"
	case ReadWrite:
		return "read-write"
	}
	return fmt.Sprintf("access(%d)", uint32(a))
}

var (
	// ErrDirectAccessDisabled means one side does not allow direct access.
	ErrDirectAccessDisabled = errors.New("alpc: direct access is not allowed on this connection")
	// ErrNotGranted means the peer has not granted (or has revoked) a region.
	ErrNotGranted = errors.New("alpc: region not granted")
	// ErrReadOnly means a write to a region granted read-only.
	ErrReadOnly = errors.New("alpc: region is read-only")
)

// Region is shared memory this process owns and may grant to peers.
type Region struct {
	mu       sync.Mutex
	fd       int
	mem      []byte
	readOnly bool // sealed F_SEAL_FUTURE_WRITE
}

// NewRegion creates a size-byte region, zero-filled, sealed against
// shrinking and growing so that no mapping of it can ever fault.
func NewRegion(size int) (*Region, error) {
	if size <= 0 {
		return nil, fmt.Errorf("alpc: region size %d must be positive", size)
	}
	fd, err := sys.MemfdCreate("kalpc-region", int64(size))
	if err != nil {
		return nil, fmt.Errorf("alpc: creating region: %w", err)
	}
	if err := sys.AddSeals(fd, sys.SealShrink|sys.SealGrow); err != nil {
		_ = sys.Close(fd)
		return nil, fmt.Errorf("alpc: sealing region: %w", err)
	}
	mem, err := sys.Mmap(fd, size, sys.ProtRead|sys.ProtWrite)
	if err != nil {
		_ = sys.Close(fd)
		return nil, fmt.Errorf("alpc: mapping region: %w", err)
	}
	return &Region{fd: fd, mem: mem}, nil
}

// Bytes returns the region's memory, writable by its owner, valid until Close.
func (r *Region) Bytes() []byte { return r.mem }

// Len returns the region's size.
func (r *Region) Len() int { return len(r.mem) }

// Close unmaps the region and closes its descriptor. Peers that were
// granted it keep their mappings until they are revoked or their
// connection ends.
func (r *Region) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fd < 0 {
		return ErrClosed
	}
	_ = sys.Munmap(r.mem)
	r.mem = nil
	err := sys.Close(r.fd)
	r.fd = -1
	return err
}

// Grant is a region granted to the peer of a connection.
type Grant struct {
	c       *Conn
	id      uint64
	access  Access
	revoked atomic.Bool
}

// ID identifies the grant on its connection; tell the peer this id (in a
// message) so it can find the region with Conn.Region.
func (g *Grant) ID() uint64 { return g.id }

// Access returns what the grant allows.
func (g *Grant) Access() Access { return g.access }

// Grant gives the peer direct access to r. A read-only grant seals r
// against new writable mappings for good (see ReadOnly); a read-write grant
// fails with ErrReadOnly if r was granted read-only before, or if a process
// holding r (a peer it was granted to read-write) sealed it against
// writing. Seals a holder adds only ever restrict later grants of r; the
// owner's mapping stays as it is.
func (c *Conn) Grant(ctx context.Context, r *Region, access Access) (*Grant, error) {
	if !c.lim.directAccess {
		return nil, ErrDirectAccessDisabled
	}
	if access != ReadOnly && access != ReadWrite {
		return nil, fmt.Errorf("alpc: grant: invalid access %v", access)
	}
	r.mu.Lock()
	if r.fd < 0 {
		r.mu.Unlock()
		return nil, fmt.Errorf("alpc: grant: region closed: %w", ErrClosed)
	}
	if access == ReadOnly && !r.readOnly {
		if err := sys.AddSeals(r.fd, sys.SealFutureWrite); err != nil {
			r.mu.Unlock()
			return nil, fmt.Errorf("alpc: grant: sealing region read-only: %w", err)
		}
		r.readOnly = true
	}
	if access == ReadWrite && r.readOnly {
		r.mu.Unlock()
		return nil, fmt.Errorf("alpc: grant: region was granted read-only before: %w", ErrReadOnly)
	}
	if access == ReadWrite {
		// Anyone holding the region's descriptor (a peer it was granted to
		// read-write) can add seals. Against writing, the peer could not
		// map the grant and would end the connection: refuse it here.
		seals, err := sys.GetSeals(r.fd)
		if err == nil && seals&(sys.SealWrite|sys.SealFutureWrite) != 0 {
			err = fmt.Errorf("region was sealed against writing by a process holding it: %w", ErrReadOnly)
		}
		if err != nil {
			r.mu.Unlock()
			return nil, fmt.Errorf("alpc: grant: %w", err)
		}
	}
	fd, err := sys.DupCloexec(r.fd)
	size := len(r.mem)
	r.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("alpc: grant: %w", err)
	}
	defer func() { _ = sys.Close(fd) }()
	g := &Grant{c: c, id: c.nextGrant.Add(1), access: access}
	h := wire.Header{Type: wire.TypeGrant, ID: g.id, Aux32: uint32(access), Aux64: uint64(size)}
	if err := c.write(ctx, &h, nil, []int{fd}); err != nil {
		return nil, err
	}
	return g, nil
}

// Revoke withdraws the grant; revoking it again fails with ErrNotGranted.
// Revoke returns once the revoke message is queued. The peer's library
// handles it before any message sent after it: it waits for the region
// accesses in progress (ReadAt, WriteAt) to end, unmaps the region, and
// from then on Conn.Region, ReadAt and WriteAt fail with ErrNotGranted. So
// once a Call made after Revoke returns, a peer using this library no
// longer reads or writes the region (slices it took from
// RemoteRegion.Bytes are the exception: using them after a revoke faults
// in the peer).
//
// Revocation is cooperative: a peer that ignores the protocol keeps what it
// mapped (a mapping outlives the descriptor and the connection), so treat
// a granted region as disclosed to that peer for good. To take memory back
// from a peer you do not trust, stop using the region: copy what you need
// into a new one and Close the old.
func (g *Grant) Revoke(ctx context.Context) error {
	if !g.revoked.CompareAndSwap(false, true) {
		return fmt.Errorf("alpc: revoke: grant %d: %w", g.id, ErrNotGranted)
	}
	h := wire.Header{Type: wire.TypeRevoke, ID: g.id}
	if err := g.c.write(ctx, &h, nil, nil); err != nil {
		g.revoked.Store(false) // not sent: the grant stands
		return err
	}
	return nil
}

// RemoteRegion is a region the peer granted to this side.
type RemoteRegion struct {
	id     uint64
	access Access
	mu     sync.RWMutex
	mem    []byte // nil once revoked
}

// ID returns the grant's id.
func (rr *RemoteRegion) ID() uint64 { return rr.id }

// Access returns what the grant allows.
func (rr *RemoteRegion) Access() Access { return rr.access }

// Len returns the region's size (0 once revoked).
func (rr *RemoteRegion) Len() int {
	rr.mu.RLock()
	defer rr.mu.RUnlock()
	return len(rr.mem)
}

// ReadAt copies from the region at off, as io.ReaderAt. It is safe against
// a concurrent revocation.
func (rr *RemoteRegion) ReadAt(p []byte, off int64) (int, error) {
	rr.mu.RLock()
	defer rr.mu.RUnlock()
	if rr.mem == nil {
		return 0, ErrNotGranted
	}
	if off < 0 || off > int64(len(rr.mem)) {
		return 0, fmt.Errorf("alpc: region read at %d outside %d bytes", off, len(rr.mem))
	}
	n := copy(p, rr.mem[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt copies p into the region at off, as io.WriterAt.
func (rr *RemoteRegion) WriteAt(p []byte, off int64) (int, error) {
	if rr.access != ReadWrite {
		return 0, ErrReadOnly
	}
	rr.mu.RLock()
	defer rr.mu.RUnlock()
	if rr.mem == nil {
		return 0, ErrNotGranted
	}
	if off < 0 || off > int64(len(rr.mem)) || int64(len(p)) > int64(len(rr.mem))-off {
		return 0, fmt.Errorf("alpc: region write of %d bytes at %d outside %d bytes", len(p), off, len(rr.mem))
	}
	return copy(rr.mem[off:], p), nil
}

// Bytes returns the mapping itself for in-place access: read-only memory
// for a ReadOnly grant (writing faults). It is valid until the grant is
// revoked or the connection ends; prefer ReadAt/WriteAt where the peer may
// revoke concurrently.
func (rr *RemoteRegion) Bytes() []byte {
	rr.mu.RLock()
	defer rr.mu.RUnlock()
	return rr.mem
}

func (rr *RemoteRegion) unmap() {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.mem != nil {
		_ = sys.Munmap(rr.mem)
		rr.mem = nil
	}
}

// Region returns the region the peer granted with id.
func (c *Conn) Region(id uint64) (*RemoteRegion, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rr := c.regions[id]
	if rr == nil {
		return nil, fmt.Errorf("%w: id %d", ErrNotGranted, id)
	}
	return rr, nil
}

// maxRegions bounds the regions one peer may grant.
const maxRegions = 1024

// receiveGrant validates and maps a region granted by the peer. fd stays
// owned by the caller.
func (c *Conn) receiveGrant(h *wire.Header, fd int) error {
	if !c.lim.directAccess {
		return protocolErrorf("direct-access grant, but direct access was not negotiated")
	}
	access := Access(h.Aux32)
	if access != ReadOnly && access != ReadWrite {
		return protocolErrorf("grant %d with invalid access %d", h.ID, h.Aux32)
	}
	seals, err := sys.GetSeals(fd)
	if err != nil {
		return protocolErrorf("grant %d is not a sealable memfd: %v", h.ID, err)
	}
	if seals&(sys.SealShrink|sys.SealGrow) != sys.SealShrink|sys.SealGrow {
		return protocolErrorf("grant %d is not sealed against shrinking and growing (seals %#x)", h.ID, seals)
	}
	size, err := sys.FileSize(fd)
	if err != nil {
		return protocolErrorf("grant %d: %v", h.ID, err)
	}
	if size <= 0 || uint64(size) != h.Aux64 || size > c.cfg.MaxSectionBytes {
		return protocolErrorf("grant %d is %d bytes, announced %d (limit %d)", h.ID, size, h.Aux64, c.cfg.MaxSectionBytes)
	}
	prot := sys.ProtRead
	if access == ReadWrite {
		prot |= sys.ProtWrite
	}
	mem, err := sys.Mmap(fd, int(size), prot)
	if err != nil {
		return protocolErrorf("grant %d cannot be mapped %v: %v", h.ID, access, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.err != nil:
		_ = sys.Munmap(mem)
		return nil
	case c.regions[h.ID] != nil:
		_ = sys.Munmap(mem)
		return protocolErrorf("grant %d announced twice", h.ID)
	case len(c.regions) >= maxRegions:
		_ = sys.Munmap(mem)
		return protocolErrorf("peer exceeded %d grants", maxRegions)
	}
	c.regions[h.ID] = &RemoteRegion{id: h.ID, access: access, mem: mem}
	return nil
}

func (c *Conn) receiveRevoke(id uint64) {
	c.mu.Lock()
	rr := c.regions[id]
	delete(c.regions, id)
	c.mu.Unlock()
	if rr != nil {
		rr.unmap()
	}
}

// closeRegions unmaps every region the peer granted.
func (c *Conn) closeRegions() {
	c.mu.Lock()
	regions := c.regions
	c.regions = map[uint64]*RemoteRegion{}
	c.mu.Unlock()
	for _, rr := range regions {
		rr.unmap()
	}
}
