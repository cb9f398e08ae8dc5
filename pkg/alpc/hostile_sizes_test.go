//go:build linux && !kalpc_stub

package alpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// TestHostileHugeSizes: a peer declares sizes far beyond the limits (in
// references, section announcements, releases and the handshake). Each is
// refused with a protocol error naming the size, before anything of that
// size is allocated or mapped, and other connections carry on.
func TestHostileHugeSizes(t *testing.T) {
	checkLeaks(t)
	baseMaps := sectionMaps(t)
	const maxMessage = 1 << 20
	var logs logCapture
	restore := logs.install()
	defer restore()
	path, conns, good, goodServer := listenWithGood(t, &Config{MaxMessageSize: maxMessage, MaxSectionBytes: 64 << 20, Handler: testHandler(nil)}, nil, 1)
	g := startGoodTraffic(t, good)

	section := func(id, size uint64) []byte {
		h := wire.Header{Type: wire.TypeSection, ID: id, NFDs: 1, Aux64: size}
		b := make([]byte, wire.HeaderSize)
		h.Put(b)
		return b
	}
	ref := func(sec uint32, off, n uint64) []byte {
		r := wire.SectionRef{Section: sec, Offset: off, Length: n}
		b := make([]byte, wire.SectionRefSize)
		r.Put(b)
		return header(wire.TypeRequest, wire.FlagSection, 1, b)
	}
	sealed := func(size int64) func() int {
		return func() int { return sectionFD(t, size, goodSeals) }
	}
	tests := []struct {
		name  string
		steps []hostileStep
		wants string
	}{
		{"reference longer than MaxMessageSize", []hostileStep{{section(1, 4<<20), sealed(4 << 20)}, {ref(1, 0, 2<<20), nil}},
			"section payload of 2097152 bytes exceeds MaxMessageSize 1048576"},
		{"reference of 2^63 bytes", []hostileStep{{section(1, 1<<20), sealed(1 << 20)}, {ref(1, 0, 1<<63), nil}},
			"section payload of 9223372036854775808 bytes exceeds MaxMessageSize"},
		{"reference of 2^64-1 bytes to an unknown section", []hostileStep{{ref(7, 0, 1<<64-1), nil}},
			"section payload of 18446744073709551615 bytes exceeds MaxMessageSize"},
		{"section announced as 2^63 bytes", []hostileStep{{section(1, 1<<63), sealed(1 << 20)}},
			"section 1 is 1048576 bytes, announced 9223372036854775808"},
		{"section announced as 2^64-1 bytes", []hostileStep{{section(1, 1<<64-1), sealed(1 << 20)}},
			"section 1 is 1048576 bytes, announced 18446744073709551615"},
		{"section announced as 0 bytes", []hostileStep{{section(1, 0), sealed(1 << 20)}},
			"section 1 is 1048576 bytes, announced 0"},
		{"section id beyond 32 bits", []hostileStep{{section(1<<32, 1<<20), sealed(1 << 20)}},
			"section id 4294967296 out of range"},
		{"release of 2^63 bytes", []hostileStep{{header(wire.TypeRelease, 0, 0, wire.AppendExtent(nil, wire.Extent{Section: 1, Offset: 0, Length: 1 << 63})), nil}},
			"release of an impossible extent [0, +9223372036854775808)"},
		{"header declaring 4 GiB of payload", []hostileStep{{func() []byte {
			b := header(wire.TypeRequest, 0, 1, []byte("echo:x"))
			b[16], b[17], b[18], b[19] = 0xff, 0xff, 0xff, 0xff
			return b
		}(), nil}}, "declares 4294967295 payload bytes but carries 6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			attack(t, path, conns, tt.steps, tt.wants)
			if out, err := good.Call(t.Context(), []byte("echo:still here")); err != nil || string(out) != "still here" {
				t.Fatalf("good connection after attack: %q, %v", out, err)
			}
		})
	}

	// Connection messages: absurd parameters. Out-of-range values are
	// refused (the port logs why and hangs up); huge but well-formed limits
	// are not an attack on their own: each side's own limits always apply
	// (the connection uses the smaller of the two).
	params := func(p wire.Params) []byte {
		b := make([]byte, wire.ParamsSize)
		p.Put(b)
		return b
	}
	absurd := wire.Params{InlineLimit: DefaultInlineLimit, MaxPendingCalls: 1<<32 - 1, MaxMessageSize: 1<<64 - 1, MaxSectionBytes: 1<<64 - 1, Features: 1<<32 - 1}
	refused := []struct {
		name  string
		msg   []byte
		wants string
	}{
		{"inline limit of 4 GiB", header(wire.TypeConnect, 0, 0, params(wire.Params{InlineLimit: 1<<32 - 1, MaxPendingCalls: 1, MaxMessageSize: 1<<64 - 1})), "inline limit 4294967295 outside"},
		{"zero pending calls", header(wire.TypeConnect, 0, 0, params(wire.Params{InlineLimit: 1024, MaxMessageSize: 1 << 20})), "max pending calls is 0"},
		{"max message below inline limit", header(wire.TypeConnect, 0, 0, params(wire.Params{InlineLimit: 4096, MaxPendingCalls: 1, MaxMessageSize: 1})), "max message size 1 below inline limit 4096"},
		{"connect declaring 4 GiB", func() []byte {
			b := header(wire.TypeConnect, 0, 0, params(absurd))
			b[16], b[17], b[18], b[19] = 0xff, 0xff, 0xff, 0xff
			return b
		}(), "declares 4294967295 payload bytes but carries 32"},
		{"connection message over the limit", header(wire.TypeConnect, 0, 0, append(params(absurd), make([]byte, 2*MaxConnectionMessage)...)), "handshake message larger than"},
	}
	for _, tt := range refused {
		t.Run("connect/"+tt.name, func(t *testing.T) {
			fd, err := connect(t.Context(), path)
			if err != nil {
				t.Fatal(err)
			}
			defer sys.Close(fd)
			if err := sys.SetNonblock(fd, false); err != nil {
				t.Fatal(err)
			}
			if err := sys.Sendmsg(fd, tt.msg, nil, nil, sys.MsgNoSignal); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, handshakeBufSize)
			n, _, _, err := sys.Recvmsg(fd, buf, nil, 0)
			if err == nil && n != 0 {
				t.Fatalf("the port answered an invalid connection message with %d bytes", n)
			}
			deadline := time.Now().Add(2 * time.Second)
			for !logs.contains(tt.wants) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if !logs.contains(tt.wants) {
				t.Errorf("the port did not report %q", tt.wants)
			}
		})
	}
	t.Run("connect/huge but well-formed limits are clamped", func(t *testing.T) {
		ctx := context.Background()
		fd, err := connect(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeHandshake(ctx, fd, wire.TypeConnect, &absurd, nil); err != nil {
			t.Fatal(err)
		}
		if h, _, err := readHandshake(ctx, fd); err != nil || h.Type != wire.TypeAccept {
			t.Fatalf("handshake: %v %v", h.Type, err)
		}
		if err := sys.SetNonblock(fd, false); err != nil {
			t.Fatal(err)
		}
		defer sys.Close(fd)
		server := <-conns
		defer server.Close()
		want := Limits{InlineLimit: DefaultInlineLimit, MaxMessageSize: maxMessage, MaxPendingCalls: DefaultMaxPendingCalls, MaxSectionBytes: 64 << 20}
		if got := server.Limits(); got != want {
			t.Fatalf("limits negotiated with absurd parameters: %+v; want the port's own %+v", got, want)
		}
		// And the port holds the peer to them.
		mfd := sectionFD(t, 4<<20, goodSeals)
		err = sys.Sendmsg(fd, section(1, 4<<20), nil, []int{mfd}, sys.MsgNoSignal)
		sys.Close(mfd)
		if err != nil {
			t.Fatal(err)
		}
		if err := sys.Sendmsg(fd, ref(1, 0, maxMessage+1), nil, nil, sys.MsgNoSignal); err != nil {
			t.Fatal(err)
		}
		<-server.Done()
		if err := server.Err(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), fmt.Sprintf("exceeds MaxMessageSize %d", maxMessage)) {
			t.Fatalf("server connection ended with %v", err)
		}
	})
	t.Run("hostile server accepting with absurd limits", func(t *testing.T) {
		hpath := t.TempDir() + "/evil.sock"
		lfd, err := rawListener(hpath, 4)
		if err != nil {
			t.Fatal(err)
		}
		defer sys.Close(lfd)
		served := make(chan struct{})
		go func() {
			defer close(served)
			fd, err := sys.Accept4(lfd)
			if err != nil {
				return
			}
			defer sys.Close(fd)
			_, _, _ = readHandshake(context.Background(), fd)
			_ = writeHandshake(context.Background(), fd, wire.TypeAccept, &absurd, nil)
			buf := make([]byte, 64)
			_, _, _, _ = sys.Recvmsg(fd, buf, nil, 0) // until the client hangs up
		}()
		c, err := Dial(t.Context(), hpath, nil, &Config{MaxMessageSize: maxMessage, MaxPendingCalls: 8, MaxSectionBytes: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		want := Limits{InlineLimit: DefaultInlineLimit, MaxMessageSize: maxMessage, MaxPendingCalls: 8, MaxSectionBytes: 8 << 20}
		if got := c.Limits(); got != want {
			t.Errorf("client limits with a server announcing absurd ones: %+v; want its own %+v", got, want)
		}
		c.Close()
		<-served
	})
	g.finish(t, 10, 50*time.Millisecond)
	good.Close()
	goodServer.Close()
	deadline := time.Now().Add(3 * time.Second)
	for sectionMaps(t) > baseMaps && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := sectionMaps(t); n > baseMaps {
		t.Errorf("%d section mappings left (baseline %d)", n, baseMaps)
	}
}
