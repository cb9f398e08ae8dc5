package wire

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		h       Header
		payload []byte
	}{
		{Header{Type: TypeRequest, ID: 1, Aux64: 12345}, []byte("hello")},
		{Header{Type: TypeRequest, Flags: FlagOneWay, ID: 1<<64 - 1}, nil},
		{Header{Type: TypeError, ID: 9, Aux32: 5}, []byte("boom")},
		{Header{Type: TypeCredit, Aux32: 3}, nil},
		{Header{Type: TypeSection, ID: 2, NFDs: 1, Aux64: 1 << 20}, nil},
		{Header{Type: TypeRelease}, AppendExtent(nil, Extent{Section: 1, Offset: 4096, Length: 100})},
	}
	for _, tt := range tests {
		t.Run(tt.h.Type.String(), func(t *testing.T) {
			tt.h.Length = uint32(len(tt.payload))
			b := make([]byte, HeaderSize)
			tt.h.Put(b)
			b = append(b, tt.payload...)
			got, payload, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.h, got); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			if !bytes.Equal(payload, tt.payload) {
				t.Errorf("payload = %q, want %q", payload, tt.payload)
			}
		})
	}
}

func TestParamsRoundTrip(t *testing.T) {
	p := Params{InlineLimit: 63 << 10, MaxPendingCalls: 1024, MaxMessageSize: 1 << 30, Features: FeatureSections, MaxSectionBytes: 1 << 30}
	b := make([]byte, ParamsSize)
	p.Put(b)
	got, err := ParseParams(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("params (-want +got):\n%s", diff)
	}
}

func TestCheckExtent(t *testing.T) {
	tests := []struct {
		off, n, size uint64
		ok           bool
	}{
		{0, 0, 0, true},
		{0, 10, 10, true},
		{5, 5, 10, true},
		{5, 6, 10, false},
		{11, 0, 10, false},
		{1<<64 - 1, 2, 10, false},
		{2, 1<<64 - 1, 10, false},
		{1 << 63, 1 << 63, 1<<64 - 1, false},
	}
	for _, tt := range tests {
		if got := CheckExtent(tt.off, tt.n, tt.size); got != tt.ok {
			t.Errorf("CheckExtent(%d, %d, %d) = %v, want %v", tt.off, tt.n, tt.size, got, tt.ok)
		}
	}
}

// FuzzParse feeds arbitrary datagrams to the decoder: it must never panic,
// and whatever it accepts must re-encode to the same bytes.
func FuzzParse(f *testing.F) {
	for _, h := range []Header{
		{Type: TypeRequest, ID: 1}, {Type: TypeReply, ID: 1}, {Type: TypeCancel, ID: 3},
		{Type: TypeCredit, Aux32: 1}, {Type: TypeSection, ID: 1, NFDs: 1},
		{Type: TypeGoAway}, {Type: TypeGoAway, Aux32: GoAwayAck},
	} {
		b := make([]byte, HeaderSize)
		h.Put(b)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformed", err)
			}
			return
		}
		out := make([]byte, HeaderSize)
		h.Put(out)
		out = append(out, payload...)
		if !bytes.Equal(out, b) {
			t.Fatalf("accepted datagram does not re-encode identically:\n in %x\nout %x", b, out)
		}
		if h.Flags&FlagSection != 0 {
			if _, err := ParseSectionRef(payload); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatal(err)
			}
		}
		if h.Type == TypeRelease {
			if _, err := ParseExtents(payload); err != nil {
				t.Fatalf("release accepted by Parse but extents rejected: %v", err)
			}
		}
	})
}

// FuzzParseParams checks the handshake parameter decoder.
func FuzzParseParams(f *testing.F) {
	b := make([]byte, ParamsSize)
	(&Params{InlineLimit: 63 << 10, MaxPendingCalls: 1, MaxMessageSize: 1 << 30, MaxSectionBytes: 1 << 30}).Put(b)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseParams(b)
		if err != nil {
			return
		}
		if p.InlineLimit < MinInlineLimit || p.InlineLimit > MaxInlineLimit || p.MaxPendingCalls == 0 || p.MaxMessageSize < uint64(p.InlineLimit) {
			t.Fatalf("accepted out-of-range params %+v", p)
		}
	})
}
