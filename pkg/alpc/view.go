package alpc

import "sync/atomic"

// View is a received payload read in place, without a copy: for a payload
// that arrived in shared memory, a read-only window into the peer's section.
// The peer cannot reuse that memory until the View is released, so release
// it as soon as you are done. Bytes panics once the View is released; a
// slice obtained earlier must not be used after Release.
type View struct {
	c        *Conn
	sp       *sectionPayload
	data     []byte
	released atomic.Bool
}

func newView(c *Conn, inline []byte, sp *sectionPayload) *View {
	v := &View{c: c, sp: sp, data: inline}
	if sp != nil {
		v.data = sp.bytes()
	}
	return v
}

// Bytes returns the payload. The slice is read-only (writing to a
// shared-memory view faults) and valid until Release.
func (v *View) Bytes() []byte {
	if v.released.Load() {
		panic(errReleased)
	}
	return v.data
}

// Len returns the payload's length.
func (v *View) Len() int { return len(v.data) }

// Shared reports whether the payload is read in place from shared memory
// (false for small payloads, which were copied through the socket).
func (v *View) Shared() bool { return v.sp != nil }

// Release returns the memory to the peer. Calling it again does nothing.
func (v *View) Release() {
	if v.released.Swap(true) {
		return
	}
	v.data = nil
	if v.sp != nil {
		v.c.releasePayload(v.sp)
	}
}
