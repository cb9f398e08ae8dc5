package ctl

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kalpc/kalpc/internal/podid"
)

func sampleMessages() []*Message {
	pol := Policy{InlineLimit: 64512, MaxMessageBytes: 1 << 28, MaxSectionBytes: 1 << 28, MaxPendingMessages: 1024, MaxConnections: 10, DirectAccess: true}
	peer := podid.Identity{Namespace: "apps", ServiceAccount: "client", PodName: "client-0", PodUID: "2b7c9f6e-0000-4000-8000-000000000001"}
	return []*Message{
		{Type: TypePublish, Name: "echo"},
		{Type: TypePublished, Policy: pol},
		{Type: TypeConnect, Namespace: "apps", Name: "echo", Payload: []byte("hello")},
		{Type: TypeIncoming, ID: 7, Peer: peer, Payload: []byte("hello")},
		{Type: TypeAccept, ID: 7, Payload: []byte("welcome")},
		{Type: TypeReject, ID: 7, Reason: "busy"},
		{Type: TypeChannel, ID: 7, Policy: pol, Peer: peer},
		{Type: TypeError, Code: CodeDenied, Reason: "client apps/client is not allowed"},
		{Type: TypeClosed, ID: 7},
		{Type: TypePeerHello, Token: "eyJhbGciOi.x.y"},
		{Type: TypePeerConnect, Token: "eyJhbGciOi.x.y", Namespace: "apps", Name: "echo", Payload: []byte("m")},
		{Type: TypePeerAccepted, Policy: pol, Payload: []byte("welcome")},
		{Type: TypePeerRefused, Code: CodeRejected, Reason: "busy"},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		t.Run(m.Type.String(), func(t *testing.T) {
			b, err := Encode(m)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if diff := cmp.Diff(m, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	good, err := Encode(&Message{Type: TypeConnect, Namespace: "apps", Name: "echo", Payload: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		b    []byte
	}{
		{"short", good[:5]},
		{"bad magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"bad version", mutate(func(b []byte) []byte { b[2] = 2; return b })},
		{"unknown type", mutate(func(b []byte) []byte { b[3] = 99; return b })},
		{"length mismatch", mutate(func(b []byte) []byte { b[4]++; return b })},
		{"trailing bytes", mutate(func(b []byte) []byte { b[4]++; return append(b, 0) })},
		{"truncated field", mutate(func(b []byte) []byte { b[4] -= 1; return b[:len(b)-1] })},
		{"bad name", mustEncodeRaw(TypePublish, []byte{3, 0, 0, 0, 'A', 'b', 'c'})},
		{"name with slash", mustEncodeRaw(TypePublish, []byte{3, 0, 0, 0, 'a', '/', 'c'})},
		{"zero id", mustEncodeRaw(TypeClosed, make([]byte, 8))},
		{"unknown code", mustEncodeRaw(TypePeerRefused, []byte{0xff, 0xff, 0, 0, 0, 0})},
		{"huge length", mustEncodeRaw(TypePeerHello, []byte{0xff, 0xff, 0xff, 0xff})},
		{"empty token", mustEncodeRaw(TypePeerHello, []byte{0, 0, 0, 0})},
		{"bad utf8", mustEncodeRaw(TypeReject, append([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, 0xff))},
		// A reject reason relayed by a peer sidecar or the broker: its
		// text is checked on receipt, not only when sent.
		{"bad utf8 peer refusal", mustEncodeRaw(TypePeerRefused, append([]byte{byte(CodeRejected), 0, 2, 0, 0, 0}, 'a', 0xc3))},
		{"bad utf8 broker error", mustEncodeRaw(TypeError, append([]byte{0, 0, 0, 0, 0, 0, 0, 0, byte(CodeRejected), 0, 2, 0, 0, 0}, 0xe2, 0x82))},
		{"bad bool", mustEncodeRaw(TypePublished, append(make([]byte, 28), 2))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if m, err := Decode(tt.b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode = %+v, %v; want ErrMalformed", m, err)
			}
		})
	}
}

func mustEncodeRaw(typ Type, body []byte) []byte {
	b := []byte{0x4B, 0x43, Version, byte(typ), 0, 0, 0, 0}
	b[4] = byte(len(body))
	b[5] = byte(len(body) >> 8)
	return append(b, body...)
}

func TestEncodeRefuses(t *testing.T) {
	for _, m := range []*Message{
		{Type: TypePublish, Name: "Bad_Name"},
		{Type: TypeConnect, Namespace: "a", Name: "b", Payload: make([]byte, MaxUserMessage+1)},
		{Type: TypeError, Code: 999},
		{Type: 77},
	} {
		if _, err := Encode(m); err == nil {
			t.Errorf("Encode(%+v) succeeded", m)
		}
	}
}

func pair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := Dial(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

func TestReadWriteWithDescriptor(t *testing.T) {
	a, b := pair(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := Write(a, &Message{Type: TypeChannel, ID: 1}, r); err != nil {
		t.Fatal(err)
	}
	m, f, err := Read(b)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if m.Type != TypeChannel || f == nil {
		t.Fatalf("got %v with file %v", m.Type, f)
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := f.Read(buf); err != nil || !bytes.Equal(buf, []byte("x")) {
		t.Fatalf("received descriptor does not read the pipe: %v %q", err, buf)
	}
}

func TestReadRefusesUnexpectedDescriptor(t *testing.T) {
	a, b := pair(t)
	before := countFDs(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := Encode(&Message{Type: TypeClosed, ID: 3})
	if _, _, err := a.WriteMsgUnix(raw, unixRights(r), nil); err != nil {
		t.Fatal(err)
	}
	_ = r.Close()
	_ = w.Close()
	if _, _, err := Read(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Read = %v, want ErrMalformed", err)
	}
	if got := countFDs(t); got != before {
		t.Fatalf("descriptors: %d before, %d after; the unexpected one leaked", before, got)
	}
	// Write refuses the mismatch locally, too.
	if err := Write(a, &Message{Type: TypeChannel, ID: 1}, nil); err == nil {
		t.Fatal("Write of a channel message without a descriptor succeeded")
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestDeadlineEndsWithStop: a context bounds a control connection only
// until Deadline's stop; a connection kept afterwards (a published port's)
// must not end at the context's deadline.
func TestDeadlineEndsWithStop(t *testing.T) {
	a, b := pair(t)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	stop := Deadline(ctx, a)
	if err := Write(b, &Message{Type: TypePublished}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Read(a); err != nil {
		t.Fatalf("read within the deadline: %v", err)
	}
	stop()
	<-ctx.Done()
	time.Sleep(100 * time.Millisecond) // past the deadline, and any AfterFunc
	go func() {
		time.Sleep(200 * time.Millisecond)
		_ = Write(b, &Message{Type: TypeClosed, ID: 1}, nil)
	}()
	if m, _, err := Read(a); err != nil || m.Type != TypeClosed {
		t.Fatalf("read after stop, past the context's deadline = %v, %v; want the message", m, err)
	}

	// Before stop, cancellation still interrupts a blocked read.
	ctx2, cancel2 := context.WithCancel(t.Context())
	stop2 := Deadline(ctx2, a)
	defer stop2()
	time.AfterFunc(50*time.Millisecond, cancel2)
	if _, _, err := Read(a); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read interrupted by cancellation = %v; want a deadline error", err)
	}
}
