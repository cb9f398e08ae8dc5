package alpc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// Shared-memory sections (the ALPC "section" technique).
//
// The sender of a large payload owns the memory: it creates a memfd, sizes
// it, maps it read-write, seals it F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL and
// hands its descriptor to the peer once (a section message). After that only
// a SectionRef (section, offset, length) travels with each message. The
// receiver maps each section read-only after checking its seals and size,
// reads the payload (a private copy by default, or a View), and returns the
// buffer with a release message. Because the file cannot shrink, a mapping
// can never fault with SIGBUS, whatever the peer does.

const (
	// sectionAlign aligns buffers inside a section.
	sectionAlign = 4096
	// minSectionSize is the size of a section created for small payloads.
	minSectionSize = 4 << 20
	// keepSectionSize: fully released sections up to this size are kept for
	// reuse (until the budget needs their room); larger ones are dropped at
	// once to give the memory back.
	keepSectionSize = 256 << 20
	// maxSections bounds the sections one side maps from its peer.
	maxSections = 4096
	// requiredSeals must be set on every section a peer hands us.
	requiredSeals = sys.SealShrink | sys.SealGrow | sys.SealSeal
)

type span struct{ off, n int64 }

// outSection is a section this side created and lends to its peer.
type outSection struct {
	id        uint32
	mem       []byte
	size      int64
	announced bool
	free      []span          // sorted by offset, coalesced
	used      map[int64]int64 // allocated buffers: offset → length
	// refs counts local users that touch mem outside the pool lock: a
	// copy in progress or an unsent Loan. The mapping outlives them.
	refs int
}

func (s *outSection) take(n int64) (int64, bool) {
	for i, f := range s.free {
		if f.n < n {
			continue
		}
		off := f.off
		if f.n == n {
			s.free = append(s.free[:i], s.free[i+1:]...)
		} else {
			s.free[i] = span{f.off + n, f.n - n}
		}
		s.used[off] = n
		return off, true
	}
	return 0, false
}

func (s *outSection) give(off, n int64) {
	delete(s.used, off)
	i := sort.Search(len(s.free), func(i int) bool { return s.free[i].off > off })
	s.free = append(s.free, span{})
	copy(s.free[i+1:], s.free[i:])
	s.free[i] = span{off, n}
	// Coalesce with the next and the previous span.
	if i+1 < len(s.free) && s.free[i].off+s.free[i].n == s.free[i+1].off {
		s.free[i].n += s.free[i+1].n
		s.free = append(s.free[:i+1], s.free[i+2:]...)
	}
	if i > 0 && s.free[i-1].off+s.free[i-1].n == s.free[i].off {
		s.free[i-1].n += s.free[i].n
		s.free = append(s.free[:i], s.free[i+1:]...)
	}
}

func (s *outSection) idle() bool { return len(s.used) == 0 && s.refs == 0 }

// outPool holds a connection's outbound sections.
type outPool struct {
	mu      sync.Mutex
	secs    map[uint32]*outSection
	total   int64
	limit   int64
	nextID  uint32
	changed chan struct{} // closed (and replaced) whenever space frees up
	closed  bool
}

func newOutPool(limit int64) *outPool {
	return &outPool{secs: make(map[uint32]*outSection), limit: limit, changed: make(chan struct{})}
}

// buffer is an allocated extent of an outbound section, referenced once.
type buffer struct {
	sec *outSection
	off int64
	n   int64
}

func (b buffer) bytes() []byte { return b.sec.mem[b.off : b.off+b.n : b.off+b.n] }

func (b buffer) ref() wire.SectionRef {
	return wire.SectionRef{Section: b.sec.id, Offset: uint64(b.off), Length: uint64(b.n)}
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

// alloc reserves n bytes, creating (and announcing to the peer) a new
// section when none has room, or waiting for releases until ctx ends. The
// returned buffer holds a reference on its section; drop it with unref.
func (c *Conn) alloc(ctx context.Context, n int64) (buffer, error) {
	p := c.out
	if n > p.limit {
		return buffer{}, &LimitError{Limit: "MaxSectionBytes", Value: p.limit, Err: fmt.Errorf("%w: a %d-byte message cannot fit", ErrTooLarge, n)}
	}
	need := alignUp(max(n, 1), sectionAlign)
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return buffer{}, c.endErr()
		}
		for _, s := range p.secs {
			if !s.announced {
				continue
			}
			if off, ok := s.take(need); ok {
				s.refs++
				p.mu.Unlock()
				return buffer{s, off, n}, nil
			}
		}
		size := min(max(alignUp(need, 2<<20), minSectionSize), p.limit)
		if p.total+size > p.limit {
			if idle := p.takeIdle(p.total + size - p.limit); len(idle) > 0 {
				p.mu.Unlock()
				if err := c.dropSections(ctx, idle); err != nil {
					return buffer{}, err
				}
				continue
			}
		}
		if p.total+size <= p.limit {
			p.total += size
			p.nextID++
			id := p.nextID
			p.mu.Unlock()
			b, err := c.newSection(ctx, id, size, need, n)
			if err != nil {
				p.mu.Lock()
				p.total -= size
				p.mu.Unlock()
				p.broadcast()
			}
			return b, err
		}
		wait := p.changed
		p.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return buffer{}, &LimitError{Limit: "MaxSectionBytes", Value: p.limit, Err: fmt.Errorf("waiting for the peer to release shared memory: %w", ctx.Err())}
		case <-c.done:
			return buffer{}, c.endErr()
		}
	}
}

// takeIdle removes fully released sections from the pool until at least
// want bytes are found (or none is left) and returns them for dropSections.
// Their bytes stay counted until the peer has been told. Called with p.mu
// held.
func (p *outPool) takeIdle(want int64) []*outSection {
	var idle []*outSection
	for id, s := range p.secs {
		if want <= 0 {
			break
		}
		if s.announced && s.idle() {
			delete(p.secs, id)
			idle = append(idle, s)
			want -= s.size
		}
	}
	return idle
}

// dropSections retires sections taken from the pool: the peer is told
// (before any section announced later, so its budget follows ours), then
// they are unmapped and their bytes returned to the budget.
func (c *Conn) dropSections(ctx context.Context, secs []*outSection) error {
	var err error
	for _, s := range secs {
		h := wire.Header{Type: wire.TypeDrop, ID: uint64(s.id)}
		if err == nil {
			err = c.write(ctx, &h, nil, nil)
		}
		_ = sys.Munmap(s.mem)
		c.out.mu.Lock()
		if !c.out.closed { // closeOut already zeroed the total
			c.out.total -= s.size
		}
		c.out.mu.Unlock()
	}
	c.out.broadcast()
	return err
}

// newSection creates, seals and announces section id, with its first
// buffer (need bytes, n of them used) already allocated.
func (c *Conn) newSection(ctx context.Context, id uint32, size, need, n int64) (buffer, error) {
	fd, err := sys.MemfdCreate("kalpc-section", size)
	if err != nil {
		return buffer{}, fmt.Errorf("alpc: creating section: %w", err)
	}
	defer func() { _ = sys.Close(fd) }()
	mem, err := sys.Mmap(fd, int(size), sys.ProtRead|sys.ProtWrite)
	if err != nil {
		return buffer{}, fmt.Errorf("alpc: mapping section: %w", err)
	}
	if err := sys.AddSeals(fd, requiredSeals); err != nil {
		_ = sys.Munmap(mem)
		return buffer{}, fmt.Errorf("alpc: sealing section: %w", err)
	}
	s := &outSection{id: id, mem: mem, size: size, used: map[int64]int64{0: need}, refs: 1}
	if need < size {
		s.free = []span{{need, size - need}}
	}
	p := c.out
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = sys.Munmap(mem)
		return buffer{}, c.endErr()
	}
	p.secs[id] = s
	p.mu.Unlock()
	h := wire.Header{Type: wire.TypeSection, ID: uint64(id), Aux64: uint64(size)}
	if err := c.write(ctx, &h, nil, []int{fd}); err != nil {
		p.mu.Lock()
		delete(p.secs, id)
		p.mu.Unlock()
		c.unrefOut(s) // unmaps: the section is no longer in the pool
		return buffer{}, err
	}
	p.mu.Lock()
	s.announced = true
	p.mu.Unlock()
	p.broadcast()
	return buffer{s, 0, n}, nil
}

func (p *outPool) broadcast() {
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// unrefOut drops a local reference on s, unmapping it if the pool no longer
// holds it (connection closed or section evicted) and nobody else uses it.
func (c *Conn) unrefOut(s *outSection) {
	p := c.out
	p.mu.Lock()
	s.refs--
	gone := s.refs == 0 && p.secs[s.id] != s
	p.mu.Unlock()
	if gone {
		_ = sys.Munmap(s.mem)
	}
}

// freeBuffer returns an extent to its section: released by the peer
// (fromPeer, which must name an extent it was lent) or never sent.
func (c *Conn) freeBuffer(id uint32, off, n int64, fromPeer bool) error {
	p := c.out
	p.mu.Lock()
	s := p.secs[id]
	if s == nil {
		p.mu.Unlock()
		if fromPeer {
			return protocolErrorf("release of unknown section %d", id)
		}
		return nil
	}
	need := alignUp(max(n, 1), sectionAlign)
	if got, ok := s.used[off]; !ok || got != need {
		p.mu.Unlock()
		return protocolErrorf("release of section %d [%d, +%d) that was not lent", id, off, n)
	}
	s.give(off, need)
	if s.idle() && s.size > keepSectionSize {
		// Give large sections' memory back at once. Dropping writes to
		// the socket, which the reader (our caller) must never wait on.
		delete(p.secs, id)
		p.mu.Unlock()
		go func() { _ = c.dropSections(c.baseCtx, []*outSection{s}) }()
		return nil
	}
	p.mu.Unlock()
	p.broadcast()
	return nil
}

// closeOut tears the outbound pool down: sections nobody uses locally are
// unmapped now, the rest when their last local user lets go.
func (c *Conn) closeOut() {
	p := c.out
	p.mu.Lock()
	p.closed = true
	secs := p.secs
	p.secs = map[uint32]*outSection{}
	p.total = 0
	var unmap [][]byte
	for _, s := range secs {
		if s.refs == 0 {
			unmap = append(unmap, s.mem)
		}
	}
	p.mu.Unlock()
	for _, m := range unmap {
		_ = sys.Munmap(m)
	}
	p.broadcast()
}

// inSection is a peer's section mapped read-only.
type inSection struct {
	id   uint32
	mem  []byte
	size int64
	refs int // payloads being read or held as Views
}

// inPool holds the sections the peer lent us.
type inPool struct {
	mu     sync.Mutex
	secs   map[uint32]*inSection
	total  int64
	limit  int64
	closed bool

	// Releases waiting to be sent, and whether a goroutine is sending them.
	pending  []wire.Extent
	flushing bool
}

func newInPool(limit int64) *inPool {
	return &inPool{secs: make(map[uint32]*inSection), limit: limit}
}

// addSection validates and maps a section the peer handed us. fd stays
// owned by the caller.
func (c *Conn) addSection(h *wire.Header, fd int) error {
	if h.ID > 1<<32-1 {
		return protocolErrorf("section id %d out of range", h.ID)
	}
	id := uint32(h.ID)
	size := h.Aux64
	seals, err := sys.GetSeals(fd)
	if err != nil {
		return protocolErrorf("section %d is not a sealable memfd: %v", id, err)
	}
	if seals&requiredSeals != requiredSeals {
		return protocolErrorf("section %d is not sealed against shrinking, growing and reseal (seals %#x)", id, seals)
	}
	got, err := sys.FileSize(fd)
	if err != nil {
		return protocolErrorf("section %d: %v", id, err)
	}
	if size == 0 || uint64(got) != size {
		return protocolErrorf("section %d is %d bytes, announced %d", id, got, size)
	}
	p := c.in
	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		return nil
	case p.secs[id] != nil:
		p.mu.Unlock()
		return protocolErrorf("section %d announced twice", id)
	case len(p.secs) >= maxSections:
		p.mu.Unlock()
		return protocolErrorf("peer exceeded %d sections", maxSections)
	case size > uint64(p.limit-p.total):
		p.mu.Unlock()
		return protocolErrorf("peer exceeded MaxSectionBytes (%d): section %d of %d bytes with %d in use", p.limit, id, size, p.total)
	}
	p.total += int64(size) // reserve before mapping outside the lock
	p.mu.Unlock()
	mem, err := sys.Mmap(fd, int(size), sys.ProtRead)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.total -= int64(size)
		return fmt.Errorf("alpc: mapping peer section %d: %w", id, err)
	}
	if p.closed {
		_ = sys.Munmap(mem)
		return nil
	}
	p.secs[id] = &inSection{id: id, mem: mem, size: int64(size)}
	return nil
}

// sectionPayload is a payload that lives in a peer's section.
type sectionPayload struct {
	sec *inSection
	ext wire.Extent
}

func (sp *sectionPayload) bytes() []byte {
	return sp.sec.mem[sp.ext.Offset : sp.ext.Offset+sp.ext.Length : sp.ext.Offset+sp.ext.Length]
}

// resolve validates a SectionRef from a message and takes a reference on
// its section.
func (c *Conn) resolve(payload []byte) (*sectionPayload, error) {
	ref, err := wire.ParseSectionRef(payload)
	if err != nil {
		return nil, asProtocolError(err)
	}
	if ref.Length > uint64(c.lim.maxMessage) {
		return nil, protocolErrorf("section payload of %d bytes exceeds MaxMessageSize %d", ref.Length, c.lim.maxMessage)
	}
	p := c.in
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.secs[ref.Section]
	if s == nil {
		return nil, protocolErrorf("reference to unknown section %d", ref.Section)
	}
	if !wire.CheckExtent(ref.Offset, ref.Length, uint64(s.size)) {
		return nil, protocolErrorf("reference [%d, +%d) outside section %d of %d bytes", ref.Offset, ref.Length, ref.Section, s.size)
	}
	s.refs++
	return &sectionPayload{sec: s, ext: wire.Extent(ref)}, nil
}

// done releases a section payload: drops the local reference and returns
// the buffer to the peer.
func (c *Conn) releasePayload(sp *sectionPayload) {
	p := c.in
	p.mu.Lock()
	sp.sec.refs--
	unmap := sp.sec.refs == 0 && p.secs[sp.sec.id] != sp.sec
	send := !p.closed
	if send {
		p.pending = append(p.pending, sp.ext)
		if p.flushing {
			send = false // the goroutine flushing will send ours too
		} else {
			p.flushing = true
		}
	}
	p.mu.Unlock()
	if unmap {
		_ = sys.Munmap(sp.sec.mem)
	}
	if send {
		c.flushReleases()
	}
}

// flushReleases sends pending releases, batching those that queue up
// meanwhile, until none is left.
func (c *Conn) flushReleases() {
	const perMessage = wire.MinInlineLimit / wire.ExtentSize
	p := c.in
	for {
		p.mu.Lock()
		batch := p.pending
		if len(batch) > perMessage {
			batch = batch[:perMessage]
		}
		if len(batch) == 0 || p.closed {
			p.pending = nil
			p.flushing = false
			p.mu.Unlock()
			return
		}
		p.pending = p.pending[len(batch):]
		p.mu.Unlock()
		buf := make([]byte, 0, len(batch)*wire.ExtentSize)
		for _, e := range batch {
			buf = wire.AppendExtent(buf, e)
		}
		h := wire.Header{Type: wire.TypeRelease}
		if err := c.write(c.baseCtx, &h, buf, nil); err != nil {
			p.mu.Lock()
			p.pending = nil
			p.flushing = false
			p.mu.Unlock()
			return
		}
	}
}

// closeIn unmaps the peer's sections that nobody reads; the rest go when
// their last View is released.
func (c *Conn) closeIn() {
	p := c.in
	p.mu.Lock()
	p.closed = true
	secs := p.secs
	p.secs = map[uint32]*inSection{}
	var unmap [][]byte
	for _, s := range secs {
		if s.refs == 0 {
			unmap = append(unmap, s.mem)
		}
	}
	p.mu.Unlock()
	for _, m := range unmap {
		_ = sys.Munmap(m)
	}
}

// receiveRelease handles a release message from the peer.
func (c *Conn) receiveRelease(payload []byte) error {
	exts, err := wire.ParseExtents(payload)
	if err != nil {
		return asProtocolError(err)
	}
	for _, e := range exts {
		if e.Offset > 1<<62 || e.Length > 1<<62 {
			return protocolErrorf("release of an impossible extent [%d, +%d)", e.Offset, e.Length)
		}
		if err := c.freeBuffer(e.Section, int64(e.Offset), int64(e.Length), true); err != nil {
			return err
		}
	}
	return nil
}

// errReleased is the panic value for use of a released View or Loan.
var errReleased = errors.New("alpc: use of a released buffer")

// receiveDrop retires a section the peer will not reference again.
func (c *Conn) receiveDrop(id uint64) error {
	p := c.in
	p.mu.Lock()
	s := p.secs[uint32(id)]
	if id > 1<<32-1 || s == nil {
		p.mu.Unlock()
		return protocolErrorf("drop of unknown section %d", id)
	}
	delete(p.secs, s.id)
	p.total -= s.size
	unmap := s.refs == 0
	p.mu.Unlock()
	if unmap {
		_ = sys.Munmap(s.mem)
	}
	return nil
}
