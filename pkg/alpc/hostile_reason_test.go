//go:build linux && !kalpc_stub

package alpc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// TestHostileServerRejectReasonNotUTF8: a hostile server rejects with a
// reason that is not UTF-8 (bytes meant to corrupt the client's logs or
// JSON). Dial's RejectError carries it with the invalid bytes replaced.
func TestHostileServerRejectReasonNotUTF8(t *testing.T) {
	checkLeaks(t)
	path := answerOneHandshake(t, header(wire.TypeReject, 0, 0, []byte("go\xff\xfe away\xc3")))
	_, err := Dial(t.Context(), path, nil, nil)
	var re *RejectError
	if !errors.As(err, &re) {
		t.Fatalf("Dial to a server rejecting with invalid UTF-8 = %v; want a *RejectError", err)
	}
	if !utf8.ValidString(re.Reason) || !utf8.ValidString(err.Error()) {
		t.Fatalf("reject reason %q is not valid UTF-8", re.Reason)
	}
	if re.Reason != "go\uFFFD away\uFFFD" {
		t.Fatalf("reject reason = %q; want the text with its invalid bytes replaced", re.Reason)
	}
}

// TestRejectReasonTruncatedToValidUTF8: a reason longer than
// MaxConnectionMessage is cut; the cut must not split a rune and send the
// client invalid UTF-8.
func TestRejectReasonTruncatedToValidUTF8(t *testing.T) {
	checkLeaks(t)
	path := t.TempDir() + "/port.sock"
	l, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	reason := strings.Repeat("a", MaxConnectionMessage-1) + "é" // the last rune straddles the limit
	go func() {
		r, err := l.Accept(context.Background())
		if err == nil {
			_ = r.Reject(reason)
		}
	}()
	fd, err := connect(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close(fd)
	p := wire.Params{InlineLimit: DefaultInlineLimit, MaxPendingCalls: 16, MaxMessageSize: DefaultMaxMessageSize}
	if err := writeHandshake(t.Context(), fd, wire.TypeConnect, &p, nil); err != nil {
		t.Fatal(err)
	}
	h, payload, err := readHandshake(t.Context(), fd)
	if err != nil || h.Type != wire.TypeReject {
		t.Fatalf("handshake answered with %v, %v; want a reject", h.Type, err)
	}
	if !utf8.Valid(payload) || len(payload) > MaxConnectionMessage {
		t.Fatalf("reject reason on the wire: %d bytes, valid UTF-8 %v; want at most %d bytes of valid UTF-8",
			len(payload), utf8.Valid(payload), MaxConnectionMessage)
	}
}
