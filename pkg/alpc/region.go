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

// NewRegion creates a size-byte region, zero-filled, with all its memory
// allocated now (charged to this process: a peer it is granted to must not
// pay for it, and refuses a region with holes), sealed against shrinking
// and growing so that no mapping of it can ever fault.
func NewRegion(size int) (*Region, error) {
	if err := checkPlatform("new region"); err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, fmt.Errorf("alpc: region size %d must be positive", size)
	}
	fd, err := sys.MemfdCreate("kalpc-region", int64(size))
	if err != nil {
		return nil, fmt.Errorf("alpc: creating region: %w", err)
	}
	if err := sys.Allocate(fd, int64(size)); err != nil {
		_ = sys.Close(fd)
		return nil, fmt.Errorf("alpc: allocating region: %w", err)
	}
	if err := sys.AddSeals(fd, sys.SealShrink|sys.SealGrow); err != nil {
		_ = sys.Close(fd)
		return nil, fmt.Errorf("alpc: sealing region: %w", err)
	}
	// Populating the writable mapping writes (zeroes) every page, which a
	// peer's check requires (an allocated page never written looks like a
	// hole to it).
	mem, err := sys.MmapPopulate(fd, size, sys.ProtRead|sys.ProtWrite)
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
// handles it before any message sent after it: the region is out of its
// reach at once (accesses in progress, through RemoteRegion.Use, see zeros
// from then on; the mapping goes when they end), and from then on
// Conn.Region, ReadAt, WriteAt and Use fail with ErrNotGranted. So once a
// Call made after Revoke returns, a peer using this library no longer
// reads or writes the region.
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

// RemoteRegion is a region the peer granted to this side. Its memory is
// reached only through ReadAt, WriteAt and Use, so that a revocation or the
// end of the connection can never pull the mapping out from under a reader:
// from the revocation on, accesses still in progress see zeros instead of
// the peer's memory (never a fault), and the mapping goes when the last of
// them ends.
type RemoteRegion struct {
	c      *Conn
	id     uint64
	access Access
	mu     sync.Mutex
	mem    []byte // nil once unmapped
	users  int    // accesses in progress
	// revoked: by the peer, or the connection ended. The mapping no
	// longer shows the peer's memory.
	revoked bool
}

// ID returns the grant's id.
func (rr *RemoteRegion) ID() uint64 { return rr.id }

// Access returns what the grant allows.
func (rr *RemoteRegion) Access() Access { return rr.access }

// Len returns the region's size (0 once revoked).
func (rr *RemoteRegion) Len() int {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.revoked {
		return 0
	}
	return len(rr.mem)
}

// acquire starts an access; release ends it.
func (rr *RemoteRegion) acquire() ([]byte, error) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.revoked {
		return nil, ErrNotGranted
	}
	rr.users++
	return rr.mem, nil
}

func (rr *RemoteRegion) release() {
	rr.mu.Lock()
	rr.users--
	unmap := rr.users == 0 && rr.revoked && rr.mem != nil
	mem := rr.mem
	if unmap {
		rr.mem = nil
	}
	rr.mu.Unlock()
	if unmap {
		rr.c.unmapRegion(mem)
	}
}

// ReadAt copies from the region at off, as io.ReaderAt. It is safe against
// a concurrent revocation.
func (rr *RemoteRegion) ReadAt(p []byte, off int64) (int, error) {
	mem, err := rr.acquire()
	if err != nil {
		return 0, err
	}
	defer rr.release()
	if off < 0 || off > int64(len(mem)) {
		return 0, fmt.Errorf("alpc: region read at %d outside %d bytes", off, len(mem))
	}
	n := copy(p, mem[off:])
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
	mem, err := rr.acquire()
	if err != nil {
		return 0, err
	}
	defer rr.release()
	if off < 0 || off > int64(len(mem)) || int64(len(p)) > int64(len(mem))-off {
		return 0, fmt.Errorf("alpc: region write of %d bytes at %d outside %d bytes", len(p), off, len(mem))
	}
	return copy(mem[off:], p), nil
}

// Use calls fn with the mapping itself, for in-place access: memory the
// peer may change at any moment (treat it as untrusted input), read-only
// for a ReadOnly grant (writing to it faults). mem is valid only while fn
// runs: do not keep it, or any slice of it. If the peer revokes the grant
// or the connection ends while fn runs, mem shows zeros from then on (the
// peer's memory is out of reach at once) and fn is not interrupted; the
// mapping goes when fn returns. Use fails with ErrNotGranted once the
// grant is revoked.
func (rr *RemoteRegion) Use(fn func(mem []byte)) error {
	mem, err := rr.acquire()
	if err != nil {
		return err
	}
	defer rr.release()
	fn(mem)
	return nil
}

// revoke takes the peer's memory out of reach: unmapped at once if no
// access is in progress, otherwise replaced in place by zero pages and
// unmapped when the last access ends.
func (rr *RemoteRegion) revoke() {
	rr.mu.Lock()
	if rr.revoked {
		rr.mu.Unlock()
		return
	}
	rr.revoked = true
	mem := rr.mem
	if rr.users > 0 {
		// Readers keep valid addresses: no SIGSEGV, only zeros.
		_ = sys.Blank(mem)
		rr.mu.Unlock()
		return
	}
	rr.mem = nil
	rr.mu.Unlock()
	rr.c.unmapRegion(mem)
}

// unmapRegion unmaps a granted region and returns its bytes to the
// connection's and the process's budgets.
func (c *Conn) unmapRegion(mem []byte) {
	_ = sys.Munmap(mem)
	c.in.unreserve(int64(len(mem)))
	proc.releaseIn(int64(len(mem)))
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

// maxRegions bounds the regions one peer may grant at once.
const maxRegions = 256

// receiveGrant validates and maps a region granted by the peer. fd stays
// owned by the caller. The region counts against MaxSectionBytes and the
// process's mappings until it is unmapped.
func (c *Conn) receiveGrant(h *wire.Header, fd int) error {
	if !c.lim.directAccess {
		return protocolErrorf("direct-access grant, but direct access was not negotiated")
	}
	access := Access(h.Aux32)
	if access != ReadOnly && access != ReadWrite {
		return protocolErrorf("grant %d with invalid access %d", h.ID, h.Aux32)
	}
	what := fmt.Sprintf("grant %d", h.ID)
	// A read-only grant must be sealed against writes (as Grant does), so
	// that no hole can appear in it once checked; a read-write grant
	// cannot be, and its owner can punch holes in it later: whatever this
	// side then touches is charged here, bounded by the grant's size.
	if err := checkPeerMemory(what, fd, h.Aux64, sys.SealShrink|sys.SealGrow, access == ReadOnly); err != nil {
		return err
	}
	size := int64(h.Aux64)
	c.mu.Lock()
	switch {
	case c.ended():
		c.mu.Unlock()
		return nil // nothing to map or report any more
	case c.regions[h.ID] != nil:
		c.mu.Unlock()
		return protocolErrorf("grant %d announced twice", h.ID)
	case len(c.regions) >= maxRegions:
		c.mu.Unlock()
		return protocolErrorf("peer exceeded %d grants", maxRegions)
	}
	c.mu.Unlock()
	if err := c.in.reserve(what, size); err != nil {
		return err
	}
	if err := proc.reserveIn(size); err != nil {
		c.in.unreserve(size)
		return err
	}
	prot := sys.ProtRead
	if access == ReadWrite {
		prot |= sys.ProtWrite
	}
	mem, err := sys.Mmap(fd, int(size), prot)
	if err != nil {
		c.in.unreserve(size)
		proc.releaseIn(size)
		return protocolErrorf("grant %d cannot be mapped %v: %v", h.ID, access, err)
	}
	if err := checkAllocated(what, fd, mem); err != nil {
		_ = sys.Munmap(mem)
		c.in.unreserve(size)
		proc.releaseIn(size)
		return err
	}
	rr := &RemoteRegion{c: c, id: h.ID, access: access, mem: mem}
	c.mu.Lock()
	if c.ended() || c.regions[h.ID] != nil {
		dup := !c.ended()
		c.mu.Unlock()
		rr.revoke()
		if dup {
			return protocolErrorf("grant %d announced twice", h.ID)
		}
		return nil
	}
	c.regions[h.ID] = rr
	c.mu.Unlock()
	return nil
}

func (c *Conn) receiveRevoke(id uint64) {
	c.mu.Lock()
	rr := c.regions[id]
	delete(c.regions, id)
	c.mu.Unlock()
	if rr != nil {
		rr.revoke()
	}
}

// closeRegions unmaps every region the peer granted.
func (c *Conn) closeRegions() {
	c.mu.Lock()
	regions := c.regions
	c.regions = map[uint64]*RemoteRegion{}
	c.mu.Unlock()
	for _, rr := range regions {
		rr.revoke()
	}
}

// ended reports whether the connection has ended. Called with c.mu held.
func (c *Conn) ended() bool { return c.err != nil }
