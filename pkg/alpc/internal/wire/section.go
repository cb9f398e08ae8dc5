package wire

import "encoding/binary"

// SectionRefSize is the encoded size of a SectionRef.
const SectionRefSize = 24

// SectionRef locates a payload inside a shared-memory section:
//
//	offset size field
//	0      4    section id
//	4      4    reserved, zero
//	8      8    offset in the section
//	16     8    length in bytes
type SectionRef struct {
	Section uint32
	Offset  uint64
	Length  uint64
}

// Put encodes r into b, which must be at least SectionRefSize bytes.
func (r *SectionRef) Put(b []byte) {
	_ = b[SectionRefSize-1]
	binary.LittleEndian.PutUint32(b[0:], r.Section)
	binary.LittleEndian.PutUint32(b[4:], 0)
	binary.LittleEndian.PutUint64(b[8:], r.Offset)
	binary.LittleEndian.PutUint64(b[16:], r.Length)
}

// ParseSectionRef decodes b (exactly SectionRefSize bytes). Bounds against the
// section's size are the caller's to check, with CheckExtent.
func ParseSectionRef(b []byte) (SectionRef, error) {
	var r SectionRef
	if len(b) != SectionRefSize {
		return r, malformed("section reference of %d bytes, want %d", len(b), SectionRefSize)
	}
	r.Section = binary.LittleEndian.Uint32(b[0:])
	if v := binary.LittleEndian.Uint32(b[4:]); v != 0 {
		return r, malformed("reserved section reference field is %d, not zero", v)
	}
	r.Offset = binary.LittleEndian.Uint64(b[8:])
	r.Length = binary.LittleEndian.Uint64(b[16:])
	return r, nil
}

// CheckExtent reports whether [off, off+length) lies inside a region of size
// bytes, without overflowing.
func CheckExtent(off, length, size uint64) bool {
	return off <= size && length <= size-off
}

// ExtentSize is the encoded size of an Extent.
const ExtentSize = 20

// Extent names a buffer in a section, as returned by a release message.
//
//	offset size field
//	0      4    section id
//	4      8    offset
//	12     8    length
type Extent struct {
	Section uint32
	Offset  uint64
	Length  uint64
}

// AppendExtent appends the encoding of e to b.
func AppendExtent(b []byte, e Extent) []byte {
	b = binary.LittleEndian.AppendUint32(b, e.Section)
	b = binary.LittleEndian.AppendUint64(b, e.Offset)
	return binary.LittleEndian.AppendUint64(b, e.Length)
}

// ParseExtents decodes a release payload (validated by Parse to be a
// non-empty multiple of ExtentSize).
func ParseExtents(b []byte) ([]Extent, error) {
	if len(b)%ExtentSize != 0 {
		return nil, malformed("extent list of %d bytes", len(b))
	}
	out := make([]Extent, 0, len(b)/ExtentSize)
	for ; len(b) > 0; b = b[ExtentSize:] {
		out = append(out, Extent{
			Section: binary.LittleEndian.Uint32(b[0:]),
			Offset:  binary.LittleEndian.Uint64(b[4:]),
			Length:  binary.LittleEndian.Uint64(b[12:]),
		})
	}
	return out, nil
}
