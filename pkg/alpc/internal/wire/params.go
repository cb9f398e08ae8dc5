package wire

import "encoding/binary"

// ParamsSize is the encoded size of Params.
const ParamsSize = 32

// Feature bits advertised in Params.
const (
	// FeatureSections: the side can receive section messages.
	FeatureSections uint32 = 1 << 0
	// FeatureDirectAccess: the side accepts direct-access grants.
	FeatureDirectAccess uint32 = 1 << 1

	knownFeatures = FeatureSections | FeatureDirectAccess
)

// Params are the limits and features one side announces in the handshake.
// Each side receives at most what it announced; the connection uses the
// smaller of the two values for both directions.
//
//	offset size field
//	0      4    inline limit (largest inline payload the side receives)
//	4      4    max pending calls (requests in flight per direction)
//	8      8    max message size
//	16     4    features
//	20     4    reserved, zero
//	24     8    max section bytes (shared memory the side maps from its peer)
type Params struct {
	InlineLimit     uint32
	MaxPendingCalls uint32
	MaxMessageSize  uint64
	Features        uint32
	MaxSectionBytes uint64
}

// Put encodes p into b, which must be at least ParamsSize bytes.
func (p *Params) Put(b []byte) {
	_ = b[ParamsSize-1]
	binary.LittleEndian.PutUint32(b[0:], p.InlineLimit)
	binary.LittleEndian.PutUint32(b[4:], p.MaxPendingCalls)
	binary.LittleEndian.PutUint64(b[8:], p.MaxMessageSize)
	binary.LittleEndian.PutUint32(b[16:], p.Features)
	binary.LittleEndian.PutUint32(b[20:], 0)
	binary.LittleEndian.PutUint64(b[24:], p.MaxSectionBytes)
}

// Limits on what a peer may announce.
const (
	MinInlineLimit = 256
	MaxInlineLimit = 192 << 10 // fits one datagram with default socket buffers
)

// ParseParams decodes and validates Params at the start of b.
func ParseParams(b []byte) (Params, error) {
	var p Params
	if len(b) < ParamsSize {
		return p, malformed("handshake parameters of %d bytes, want %d", len(b), ParamsSize)
	}
	p.InlineLimit = binary.LittleEndian.Uint32(b[0:])
	p.MaxPendingCalls = binary.LittleEndian.Uint32(b[4:])
	p.MaxMessageSize = binary.LittleEndian.Uint64(b[8:])
	p.Features = binary.LittleEndian.Uint32(b[16:])
	p.MaxSectionBytes = binary.LittleEndian.Uint64(b[24:])
	if r := binary.LittleEndian.Uint32(b[20:]); r != 0 {
		return p, malformed("reserved handshake field is %d, not zero", r)
	}
	if p.InlineLimit < MinInlineLimit || p.InlineLimit > MaxInlineLimit {
		return p, malformed("inline limit %d outside [%d, %d]", p.InlineLimit, MinInlineLimit, MaxInlineLimit)
	}
	if p.MaxPendingCalls == 0 {
		return p, malformed("max pending calls is 0")
	}
	if p.MaxMessageSize < uint64(p.InlineLimit) {
		return p, malformed("max message size %d below inline limit %d", p.MaxMessageSize, p.InlineLimit)
	}
	if p.Features&^knownFeatures != 0 {
		// Unknown features are ignored rather than refused so that a newer
		// peer can talk to us; it must not rely on them unless we echo them.
		p.Features &= knownFeatures
	}
	return p, nil
}
