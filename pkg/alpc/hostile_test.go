//go:build linux && !kalpc_stub

package alpc

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// rawDial connects to path and completes a valid handshake by hand,
// returning the raw socket: the test then plays a hostile peer.
func rawDial(t *testing.T, path string) int {
	t.Helper()
	fd, err := connect(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	p := wire.Params{InlineLimit: DefaultInlineLimit, MaxPendingCalls: 16, MaxMessageSize: DefaultMaxMessageSize}
	if err := writeHandshake(t.Context(), fd, wire.TypeConnect, &p, nil); err != nil {
		t.Fatal(err)
	}
	h, _, err := readHandshake(t.Context(), fd)
	if err != nil || h.Type != wire.TypeAccept {
		t.Fatalf("raw handshake: %v %v", h.Type, err)
	}
	return fd
}

func header(typ wire.Type, flags wire.Flags, id uint64, payload []byte) []byte {
	h := wire.Header{Type: typ, Flags: flags, ID: id, Length: uint32(len(payload))}
	b := make([]byte, wire.HeaderSize, wire.HeaderSize+len(payload))
	h.Put(b)
	return append(b, payload...)
}

// goAwayMsg is a go-away message of the given kind (wire.GoAwayAnnounce or
// wire.GoAwayAck).
func goAwayMsg(kind uint32) []byte {
	h := wire.Header{Type: wire.TypeGoAway, Aux32: kind}
	b := make([]byte, wire.HeaderSize)
	h.Put(b)
	return b
}

// hostileStep is one datagram a raw peer sends, with an optional
// descriptor (made by fd, closed once sent).
type hostileStep struct {
	msg []byte
	fd  func() int
}

// attack plays a hostile client of the port at path: it completes the
// handshake by hand, sends steps, and requires the server's end of that
// connection (the next Conn from conns) to end with a protocol error
// containing wants.
func attack(t *testing.T, path string, conns <-chan *Conn, steps []hostileStep, wants string) {
	t.Helper()
	fd := rawDial(t, path)
	defer sys.Close(fd)
	server := <-conns
	defer server.Close()
	for _, s := range steps {
		var fds []int
		if s.fd != nil {
			fds = []int{s.fd()}
		}
		err := sys.Sendmsg(fd, s.msg, nil, fds, sys.MsgNoSignal)
		sys.CloseAll(fds)
		if err != nil {
			break // the server may already have hung up
		}
	}
	select {
	case <-server.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("server kept the hostile connection open")
	}
	if err := server.Err(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), wants) {
		t.Fatalf("server connection ended with %v; want a protocol error containing %q", err, wants)
	}
}

// rawListener binds and listens on a raw SOCK_SEQPACKET socket at path,
// for tests and helpers that play a hand-written server.
func rawListener(path string, backlog int) (int, error) {
	lfd, err := sys.SeqpacketSocket(false)
	if err != nil {
		return -1, err
	}
	if err := sys.Bind(lfd, path); err != nil {
		sys.Close(lfd)
		return -1, err
	}
	if err := sys.Listen(lfd, backlog); err != nil {
		sys.Close(lfd)
		return -1, err
	}
	return lfd, nil
}

// acceptInto accepts every connection and hands the server's Conns to the test.
func acceptInto(l *Listener, conns chan<- *Conn) {
	for {
		r, err := l.Accept(context.Background())
		if err != nil {
			return
		}
		if c, err := r.Accept(nil); err == nil {
			conns <- c
		}
	}
}

func pipeFDs(t *testing.T) (int, int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	rfd, _ := sys.DupCloexec(int(r.Fd()))
	wfd, _ := sys.DupCloexec(int(w.Fd()))
	r.Close()
	w.Close()
	return rfd, wfd
}

func TestHostilePeer(t *testing.T) {
	checkLeaks(t)
	block := make(chan struct{})
	defer close(block)
	// A well-behaved client whose connection must survive every attack.
	path, conns, good, _ := listenWithGood(t, &Config{MaxPendingCalls: 4, Handler: HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		if string(r.Payload()) == "block" {
			select {
			case <-block:
			case <-ctx.Done():
			}
		}
		return bytes.TrimPrefix(r.Payload(), []byte("echo:")), nil // the good traffic's echo calls
	})}, nil, 1)
	g := startGoodTraffic(t, good)
	defer g.finish(t, 10, 50*time.Millisecond)

	valid := header(wire.TypeRequest, 0, 1, []byte("hi"))
	withBytes := func(b []byte, at int, v byte) []byte {
		c := append([]byte(nil), b...)
		c[at] = v
		return c
	}
	lying := header(wire.TypeRequest, 0, 1, []byte("0123456789"))
	lying[16] = 100
	nfds1 := withBytes(valid, 6, 1)

	type attack struct {
		name  string
		msgs  [][]byte
		fds   int // pipe fds attached to the last message
		wants string
	}
	attacks := []attack{
		{name: "short datagram", msgs: [][]byte{[]byte("0123456789")}, wants: "shorter than the 32-byte header"},
		{name: "bad magic", msgs: [][]byte{withBytes(valid, 0, 'X')}, wants: "bad magic"},
		{name: "bad version", msgs: [][]byte{withBytes(valid, 2, 9)}, wants: "unsupported protocol version 9"},
		{name: "unknown type", msgs: [][]byte{withBytes(valid, 3, 99)}, wants: "unknown message type 99"},
		{name: "unknown flags", msgs: [][]byte{withBytes(valid, 5, 0x80)}, wants: "unknown flags"},
		{name: "reserved byte", msgs: [][]byte{withBytes(valid, 7, 1)}, wants: "reserved header byte"},
		{name: "lying length", msgs: [][]byte{lying}, wants: "declares 100 payload bytes but carries 10"},
		{name: "zero id", msgs: [][]byte{header(wire.TypeRequest, 0, 0, nil)}, wants: "request message with id 0"},
		{name: "unexpected fd", msgs: [][]byte{valid}, fds: 1, wants: "declares 0 fds but carries 1"},
		{name: "declared fd", msgs: [][]byte{nfds1}, fds: 1, wants: "declares 1 fds, want 0"},
		{name: "too many fds", msgs: [][]byte{valid}, fds: 3, wants: "too many file descriptors"},
		{name: "oversized datagram", msgs: [][]byte{header(wire.TypeRequest, 0, 1, make([]byte, DefaultInlineLimit+1000))}, wants: "larger than the inline limit"},
		{name: "reply to unknown call", msgs: [][]byte{header(wire.TypeReply, 0, 42, nil)}, wants: "reply for unknown call 42"},
		{name: "unearned credit", msgs: [][]byte{func() []byte {
			h := wire.Header{Type: wire.TypeCredit, Aux32: 1}
			b := make([]byte, 32)
			h.Put(b)
			return b
		}()}, wants: "credit of 1 exceeds"},
		{name: "go-away acknowledged unasked", msgs: [][]byte{goAwayMsg(wire.GoAwayAck)}, wants: "go-away acknowledged but none was announced"},
		{name: "go-away of unknown kind", msgs: [][]byte{goAwayMsg(7)}, wants: "go-away message with unknown kind 7"},
		{name: "handshake after handshake", msgs: [][]byte{header(wire.TypeHello, 0, 0, make([]byte, wire.ParamsSize))}, wants: "unexpected hello message on an established connection"},
		{name: "unknown section", msgs: [][]byte{header(wire.TypeRequest, wire.FlagSection, 1, make([]byte, wire.SectionRefSize))}, wants: "reference to unknown section 0"},
		{name: "duplicate id", msgs: [][]byte{header(wire.TypeRequest, 0, 7, []byte("block")), header(wire.TypeRequest, 0, 7, []byte("block"))}, wants: "duplicate request id 7"},
		{name: "window exceeded", msgs: [][]byte{
			header(wire.TypeRequest, 0, 1, []byte("block")), header(wire.TypeRequest, 0, 2, []byte("block")),
			header(wire.TypeRequest, 0, 3, []byte("block")), header(wire.TypeRequest, 0, 4, []byte("block")),
			header(wire.TypeRequest, 0, 5, []byte("block")),
		}, wants: "exceeded MaxPendingCalls (4 requests in flight)"},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			fd := rawDial(t, path)
			defer sys.Close(fd)
			server := <-conns
			defer server.Close()
			for i, m := range a.msgs {
				var fds []int
				if i == len(a.msgs)-1 {
					for range a.fds {
						r, w := pipeFDs(t)
						fds = append(fds, r)
						defer sys.Close(w)
					}
				}
				err := sys.Sendmsg(fd, m, nil, fds, sys.MsgNoSignal)
				sys.CloseAll(fds)
				if err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-server.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("server kept the hostile connection open")
			}
			if err := server.Err(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), a.wants) {
				t.Fatalf("server connection ended with %v; want a protocol error containing %q", err, a.wants)
			}
			// The hostile peer sees the hang-up.
			buf := make([]byte, 64)
			for {
				n, _, _, err := sys.Recvmsg(fd, buf, nil, 0)
				if err != nil || n == 0 {
					break
				}
			}
			// Other connections are unaffected.
			if out, err := good.Call(t.Context(), []byte("still here")); err != nil || string(out) != "still here" {
				t.Fatalf("good connection after attack: %q, %v", out, err)
			}
		})
	}
}

func TestHostileHandshake(t *testing.T) {
	checkLeaks(t)
	l, path := listenTest(t, &Config{HandshakeTimeout: 200 * time.Millisecond, Handler: testHandler(nil)})
	go acceptAll(t, l)
	good, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	g := startGoodTraffic(t, good)
	defer g.finish(t, 10, 50*time.Millisecond)
	send := func(t *testing.T, b []byte, fds ...int) int {
		fd, err := connect(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		if b != nil {
			if err := sys.Sendmsg(fd, b, nil, fds, sys.MsgNoSignal); err != nil {
				t.Fatal(err)
			}
		}
		return fd
	}
	expectHangup := func(t *testing.T, fd int) {
		t.Helper()
		buf := make([]byte, handshakeBufSize)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				n, _, _, err := sys.Recvmsg(fd, buf, nil, 0)
				if err != nil || n == 0 {
					return
				}
			}
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			sys.Shutdown(fd)
			<-done
			t.Fatal("listener did not hang up on a bad handshake")
		}
	}
	params := make([]byte, wire.ParamsSize)
	(&wire.Params{InlineLimit: 1024, MaxPendingCalls: 1, MaxMessageSize: 1024}).Put(params)
	tests := []struct {
		name string
		msg  []byte
		fds  bool
	}{
		{name: "silent client"},
		{name: "garbage", msg: []byte("GET / HTTP/1.1\r\n\r\n")},
		{name: "request before connect", msg: header(wire.TypeRequest, 0, 1, nil)},
		{name: "bad params", msg: header(wire.TypeConnect, 0, 0, make([]byte, wire.ParamsSize))},
		{name: "fd in connect", msg: header(wire.TypeConnect, 0, 0, params), fds: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fds []int
			if tt.fds {
				r, w := pipeFDs(t)
				defer sys.Close(w)
				fds = []int{r}
			}
			fd := send(t, tt.msg, fds...)
			sys.CloseAll(fds)
			defer sys.Close(fd)
			expectHangup(t, fd)
			// The port still serves well-behaved clients.
			c, err := Dial(t.Context(), path, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		})
	}
}

func TestHostileServer(t *testing.T) {
	checkLeaks(t)
	// Accept with nonsense parameters (inline limit 0).
	path := answerOneHandshake(t, header(wire.TypeAccept, 0, 0, make([]byte, wire.ParamsSize)))
	_, err := Dial(t.Context(), path, nil, nil)
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "inline limit 0") {
		t.Fatalf("Dial to a hostile server = %v; want a protocol error about the inline limit", err)
	}
}
