package alpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// Shared-memory sections (the ALPC "section" technique).
//
// The sender of a large payload owns the memory: it creates a memfd, sizes
// it, allocates every page (charged to the sender's memory cgroup), maps it
// read-write, seals it F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL and
// F_SEAL_FUTURE_WRITE, and hands its descriptor to the peer once (a section
// message). After that only a SectionRef (section, offset, length) travels
// with each message. The receiver maps each section read-only after
// checking its filesystem, seals, size and that no page is missing, reads
// the payload (a private copy by default, or a View), and returns the
// buffer with a release message. Because the file cannot shrink, a mapping
// can never fault with SIGBUS; because no hole can be punched in it (the
// write seal forbids that too) and it has none, the receiver's reads never
// allocate memory charged to the receiver.
//
// What a peer can make the receiver hold is bounded: the bytes it has
// mapped per connection by Config.MaxSectionBytes (sections and grants
// together, counted until unmapped), the number of sections per
// connection by maxSections, buffers in flight by non-overlapping
// references (a region of a section is lent at most once at a time, so
// copies taken of lent payloads never exceed the mapped bytes), and the
// mappings and bytes of all connections by ProcessLimits.

const (
	// sectionAlign aligns buffers inside a section.
	sectionAlign = 4096
	// minSectionSize is the size of a section created for small payloads.
	minSectionSize = 4 << 20
	// keepSectionSize: fully released sections up to this size are kept for
	// reuse (until the budget needs their room); larger ones are dropped at
	// once to give the memory back.
	keepSectionSize = 256 << 20
	// maxSections bounds the sections one side maps from its peer at once.
	// This library's sender never needs more: its sections are at least
	// minSectionSize and DefaultMaxSectionBytes / minSectionSize = 256.
	maxSections = 256
	// requiredSeals must be set on every section a peer hands us, with one
	// of writeSeals.
	requiredSeals = sys.SealShrink | sys.SealGrow | sys.SealSeal
	writeSeals    = sys.SealWrite | sys.SealFutureWrite
)

type span struct{ off, n int64 }

// usedBuf is an allocated extent of an outbound section.
type usedBuf struct {
	n int64
	// lent: the extent was sent to the peer, who may release it; before
	// that, a release naming it is a lie.
	lent bool
}

// outSection is a section this side created and lends to its peer.
type outSection struct {
	id        uint32
	mem       []byte
	size      int64
	announced bool
	free      []span            // sorted by offset, coalesced
	used      map[int64]usedBuf // allocated buffers, by offset
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
		s.used[off] = usedBuf{n: n}
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

// unmap unmaps an outbound section and returns its memory to the process.
func (s *outSection) unmap() {
	_ = sys.Munmap(s.mem)
	proc.releaseOut(s.size)
}

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
// section when none has room, or waiting for releases until ctx ends or
// WriteTimeout passes without room (the timer is not reset by releases too
// small to make room: a peer cannot trickle releases to hold a sender
// forever). The
// returned buffer holds a reference on its section; drop it with unref.
func (c *Conn) alloc(ctx context.Context, n int64) (buffer, error) {
	p := c.out
	if n > p.limit {
		if p.limit == 0 {
			return buffer{}, c.sectionsDisabled(n)
		}
		return buffer{}, &LimitError{Limit: "MaxSectionBytes", Value: p.limit, Policy: c.policyField("MaxSectionBytes", p.limit), Err: fmt.Errorf("%w: a %d-byte message cannot fit", ErrTooLarge, n)}
	}
	need := alignUp(max(n, 1), sectionAlign)
	var timeout <-chan time.Time
	stop := func() {}
	defer func() { stop() }()
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
		var procWait <-chan struct{}
		if p.total+size <= p.limit {
			var err error
			if procWait, err = proc.reserveOut(size); err != nil {
				p.mu.Unlock()
				return buffer{}, err
			}
			if procWait == nil {
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
			// The process is at its limit: give back what this
			// connection keeps idle, then wait for others to.
			if idle := p.takeIdle(size); len(idle) > 0 {
				p.mu.Unlock()
				if err := c.dropSections(ctx, idle); err != nil {
					return buffer{}, err
				}
				continue
			}
		}
		wait := p.changed
		p.mu.Unlock()
		if timeout == nil {
			timeout, stop = c.allocWait()
		}
		if err := c.waitRoom(ctx, wait, procWait, timeout); err != nil {
			return buffer{}, err
		}
	}
}

// waitRoom waits for this connection's sections (wait) or, if procWait is
// not nil, the process's section memory to free up, until ctx ends, the
// connection does, or timeout fires.
func (c *Conn) waitRoom(ctx context.Context, wait, procWait <-chan struct{}, timeout <-chan time.Time) error {
	limit, value := "MaxSectionBytes", c.out.limit
	if procWait != nil {
		// While sends wait for the process's room, every connection
		// gives back its idle sections.
		proc.waiting(1)
		defer proc.waiting(-1)
		limit, value = "MaxSectionMemory", GetProcessLimits().MaxSectionMemory
	}
	select {
	case <-wait:
	case <-procWait:
	case <-timeout:
		return &LimitError{Limit: limit, Value: value, Policy: c.policyField(limit, value), Err: fmt.Errorf("the peer released too little shared memory within WriteTimeout (%v)", c.cfg.WriteTimeout)}
	case <-ctx.Done():
		return &LimitError{Limit: limit, Value: value, Policy: c.policyField(limit, value), Err: fmt.Errorf("waiting for the peer to release shared memory: %w", ctx.Err())}
	case <-c.done:
		return c.endErr()
	}
	return nil
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
		s.unmap()
		c.out.mu.Lock()
		if !c.out.closed { // closeOut already zeroed the total
			c.out.total -= s.size
		}
		c.out.mu.Unlock()
	}
	c.out.broadcast()
	return err
}

// newSection creates, allocates, seals and announces section id, with its
// first buffer (need bytes, n of them used) already allocated. Its size is
// already counted in the process's section memory; that is given back if
// it fails.
func (c *Conn) newSection(ctx context.Context, id uint32, size, need, n int64) (buffer, error) {
	mem, fd, err := createSection(size)
	if err != nil {
		proc.releaseOut(size)
		return buffer{}, err
	}
	defer func() { _ = sys.Close(fd) }()
	s := &outSection{id: id, mem: mem, size: size, used: map[int64]usedBuf{0: {n: need}}, refs: 1}
	if need < size {
		s.free = []span{{need, size - need}}
	}
	p := c.out
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		s.unmap()
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

// createSection makes a section's memfd: every page allocated now (charged
// to this process, not to the peer that reads it) and written (zeroed by
// populating the writable mapping: the peer's check sees a page allocated
// but never written as a hole), and sealed so that it can neither change size
// nor get a hole, and nobody can map it writable again.
func createSection(size int64) ([]byte, int, error) {
	fd, err := sys.MemfdCreate("kalpc-section", size)
	if err != nil {
		return nil, -1, fmt.Errorf("alpc: creating section: %w", err)
	}
	if err := sys.Allocate(fd, size); err != nil {
		_ = sys.Close(fd)
		return nil, -1, fmt.Errorf("alpc: allocating section: %w", err)
	}
	mem, err := sys.MmapPopulate(fd, int(size), sys.ProtRead|sys.ProtWrite)
	if err != nil {
		_ = sys.Close(fd)
		return nil, -1, fmt.Errorf("alpc: mapping section: %w", err)
	}
	if err := sys.AddSeals(fd, requiredSeals|sys.SealFutureWrite); err != nil {
		_ = sys.Munmap(mem)
		_ = sys.Close(fd)
		return nil, -1, fmt.Errorf("alpc: sealing section: %w", err)
	}
	return mem, fd, nil
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
		s.unmap()
	}
}

// lend marks b as sent to the peer, who may release it from now on. It is
// called before the message is written: the peer may release it before
// the write returns.
func (c *Conn) lend(b buffer) {
	p := c.out
	p.mu.Lock()
	if u, ok := b.sec.used[b.off]; ok {
		u.lent = true
		b.sec.used[b.off] = u
	}
	p.mu.Unlock()
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
	if got, ok := s.used[off]; !ok || got.n != need || (fromPeer && !got.lent) {
		p.mu.Unlock()
		return protocolErrorf("release of section %d [%d, +%d) that was not lent", id, off, n)
	}
	s.give(off, need)
	if s.idle() && (s.size > keepSectionSize || proc.pressed()) {
		// Give large sections' memory back at once, and any section's
		// when sends of this process wait for memory. Dropping writes to
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
	var unmap []*outSection
	for _, s := range secs {
		if s.refs == 0 {
			unmap = append(unmap, s)
		}
	}
	p.mu.Unlock()
	for _, s := range unmap {
		s.unmap()
	}
	p.broadcast()
}

// inSection is a peer's section mapped read-only.
type inSection struct {
	id   uint32
	m    *peerMap
	size int64
	refs int // payloads being read or held as Views
	// lent are the extents the peer's messages reference and we have not
	// released, sorted by offset, never overlapping.
	lent []span
	gone bool // dropped by the peer, or the connection ended
}

func (s *inSection) mem() []byte { return s.m.mem }

// lend records a reference to [off, off+n) unless it overlaps one still
// lent: a sender lends each byte of its memory once at a time, so a peer
// cannot make us copy or hold one buffer many times over.
func (s *inSection) lend(off, n int64) error {
	if n == 0 {
		return nil
	}
	i := sort.Search(len(s.lent), func(i int) bool { return s.lent[i].off+s.lent[i].n > off })
	if i < len(s.lent) && s.lent[i].off < off+n {
		return protocolErrorf("reference [%d, +%d) to section %d overlaps [%d, +%d), lent and not yet released", off, n, s.id, s.lent[i].off, s.lent[i].n)
	}
	s.lent = slices.Insert(s.lent, i, span{off, n})
	return nil
}

func (s *inSection) unlend(off, n int64) {
	if n == 0 {
		return
	}
	i := sort.Search(len(s.lent), func(i int) bool { return s.lent[i].off >= off })
	if i < len(s.lent) && s.lent[i] == (span{off, n}) {
		s.lent = slices.Delete(s.lent, i, i+1)
	}
}

// inPool holds the sections the peer lent us. total counts the bytes of
// its sections and granted regions mapped for this connection, from the
// moment they are announced until they are unmapped.
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

// reserve counts size bytes of the peer's memory against MaxSectionBytes.
func (p *inPool) reserve(what string, size int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reserveLocked(what, uint64(size))
}

// reserveLocked is reserve with p.mu held. size is as the peer announced
// it (it may not fit an int64).
func (p *inPool) reserveLocked(what string, size uint64) error {
	if size > uint64(p.limit-p.total) {
		return protocolErrorf("peer exceeded MaxSectionBytes (%d): %s of %d bytes with %d mapped", p.limit, what, size, p.total)
	}
	p.total += int64(size)
	return nil
}

func (p *inPool) unreserve(size int64) {
	p.mu.Lock()
	p.total -= size
	p.mu.Unlock()
}

// addSection validates and maps a section the peer handed us. fd stays
// owned by the caller.
func (c *Conn) addSection(h *wire.Header, fd int) error {
	if c.lim.recvSections == 0 {
		return protocolErrorf("section message, but sections are disabled on this side")
	}
	if h.ID > 1<<32-1 {
		return protocolErrorf("section id %d out of range", h.ID)
	}
	id := uint32(h.ID)
	size := h.Aux64
	what := fmt.Sprintf("section %d", id)
	if err := checkPeerMemory(what, fd, size, requiredSeals, true); err != nil {
		return err
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
	}
	// Reserve before mapping outside the lock.
	if err := p.reserveLocked(what, size); err != nil {
		p.mu.Unlock()
		return err
	}
	// Claim the id too, so that a second announcement is refused.
	s := &inSection{id: id, size: int64(size)}
	p.secs[id] = s
	p.mu.Unlock()
	m, err := proc.mapShared(what, fd, int64(size))
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		delete(p.secs, id)
		p.total -= int64(size)
		return err
	}
	s.m = m
	if p.closed {
		proc.unmapShared(m)
		return nil
	}
	return nil
}

// sectionPayload is a payload that lives in a peer's section.
type sectionPayload struct {
	sec *inSection
	ext wire.Extent
}

func (sp *sectionPayload) bytes() []byte {
	return sp.sec.mem()[sp.ext.Offset : sp.ext.Offset+sp.ext.Length : sp.ext.Offset+sp.ext.Length]
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
	if s == nil || s.m == nil {
		return nil, protocolErrorf("reference to unknown section %d", ref.Section)
	}
	if !wire.CheckExtent(ref.Offset, ref.Length, uint64(s.size)) {
		return nil, protocolErrorf("reference [%d, +%d) outside section %d of %d bytes", ref.Offset, ref.Length, ref.Section, s.size)
	}
	if err := s.lend(int64(ref.Offset), int64(ref.Length)); err != nil {
		return nil, err
	}
	s.refs++
	return &sectionPayload{sec: s, ext: wire.Extent(ref)}, nil
}

// releasePayload releases a section payload: drops the local reference and
// returns the buffer to the peer.
func (c *Conn) releasePayload(sp *sectionPayload) {
	p := c.in
	p.mu.Lock()
	s := sp.sec
	s.refs--
	s.unlend(int64(sp.ext.Offset), int64(sp.ext.Length))
	unmap := s.refs == 0 && s.gone
	if unmap && !p.closed {
		p.total -= s.size
	}
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
		proc.unmapShared(s.m)
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
	var unmap []*peerMap
	for _, s := range secs {
		s.gone = true
		if s.refs == 0 && s.m != nil {
			unmap = append(unmap, s.m)
		}
	}
	p.mu.Unlock()
	for _, m := range unmap {
		proc.unmapShared(m)
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

// receiveDrop retires a section the peer will not reference again. A
// sender drops only sections we released every buffer of: a drop of a
// section still lent (its mapping in use here) is a lie.
func (c *Conn) receiveDrop(id uint64) error {
	p := c.in
	p.mu.Lock()
	s := p.secs[uint32(id)]
	if id > 1<<32-1 || s == nil || s.m == nil {
		p.mu.Unlock()
		return protocolErrorf("drop of unknown section %d", id)
	}
	if s.refs > 0 {
		p.mu.Unlock()
		return protocolErrorf("drop of section %d while %d of its buffers are still lent", id, s.refs)
	}
	delete(p.secs, s.id)
	s.gone = true
	p.total -= s.size
	p.mu.Unlock()
	proc.unmapShared(s.m)
	return nil
}
