package alpc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/kalpc/kalpc/internal/peertext"
	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// Dial connects to the connection port at path, sending msg as the
// connection message (at most MaxConnectionMessage bytes), and returns the
// new Conn once the server accepts; the server's reply message is then
// available from Conn.AcceptMessage. Dial waits until the server's
// application answers the request (ConnRequest.Accept or Reject), so a
// server must be calling Listener.Accept. If nothing listens at path, the
// error wraps ErrNoPort (with cfg.WaitForServer, Dial waits for a listener
// until ctx ends). If the server rejects, the error is a *RejectError carrying its
// reason. ctx bounds the whole handshake; it does not affect the Conn after
// Dial returns.
func Dial(ctx context.Context, path string, msg []byte, cfg *Config) (*Conn, error) {
	if err := checkPlatform("dial"); err != nil {
		return nil, err
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkHandshakeMessage("connection message", msg); err != nil {
		return nil, err
	}
	return untilServer(ctx, c.WaitForServer, ErrNoPort, func() (*Conn, error) {
		fd, err := connect(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("alpc: dial %s: %w", path, err)
		}
		conn, err := clientHandshake(ctx, fd, &c, msg)
		if err != nil {
			_ = sys.Close(fd)
			return nil, fmt.Errorf("alpc: dial %s: %w", path, err)
		}
		return conn, nil
	})
}

// connect opens a blocking socket connected to path. A full listen backlog
// (EAGAIN) is retried with back-off until ctx ends.
func connect(ctx context.Context, path string) (int, error) {
	if err := checkSocketPath(path); err != nil {
		return -1, err
	}
	fd, err := sys.SeqpacketSocket(true)
	if err != nil {
		return -1, err
	}
	backoff := time.Millisecond
	for {
		err := sys.Connect(fd, path)
		if err == nil {
			break
		}
		if !errors.Is(err, sys.EAGAIN) && !errors.Is(err, sys.EINTR) {
			_ = sys.Close(fd)
			if errors.Is(err, sys.ENOENT) || errors.Is(err, sys.ECONNREFUSED) {
				return -1, fmt.Errorf("%w: %w", ErrNoPort, err)
			}
			return -1, err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			_ = sys.Close(fd)
			return -1, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
	if err := sys.SetNonblock(fd, false); err != nil {
		_ = sys.Close(fd)
		return -1, err
	}
	return fd, nil
}

func clientHandshake(ctx context.Context, fd int, cfg *Config, msg []byte) (*Conn, error) {
	params := cfg.params()
	if err := writeHandshake(ctx, fd, wire.TypeConnect, &params, msg); err != nil {
		return nil, err
	}
	h, payload, err := readHandshake(ctx, fd)
	if err != nil {
		return nil, err
	}
	switch h.Type {
	case wire.TypeAccept:
		peer, reply, err := parseHandshake(payload)
		if err != nil {
			return nil, err
		}
		conn := newConn(fd, cfg, peer)
		conn.acceptMsg = reply
		return conn, nil
	case wire.TypeReject:
		// The reason is the peer's text: never pass on invalid UTF-8
		// (a truncated rune, or bytes meant to corrupt logs or JSON).
		return nil, &RejectError{Reason: peertext.Clean(string(payload))}
	}
	return nil, protocolErrorf("server answered the connection request with a %v message", h.Type)
}

// FileConn makes a Conn from a connected AF_UNIX SOCK_SEQPACKET socket that
// was created elsewhere, typically one end of a SocketPair handed over by a
// broker such as the kalpc sidecar. Both ends must call FileConn (or the
// equivalent): they exchange their limits in a short symmetric handshake
// bounded by ctx. FileConn duplicates the descriptor; the caller still owns
// f and should close it.
func FileConn(ctx context.Context, f *os.File, cfg *Config) (*Conn, error) {
	if err := checkPlatform("file conn"); err != nil {
		return nil, err
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("alpc: file conn: %w", err)
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(s uintptr) { fd, dupErr = sys.DupCloexec(int(s)) }); err != nil {
		return nil, fmt.Errorf("alpc: file conn: %w", err)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("alpc: file conn: %w", dupErr)
	}
	conn, err := fileConn(ctx, fd, &c)
	if err != nil {
		_ = sys.Close(fd)
		return nil, fmt.Errorf("alpc: file conn: %w", err)
	}
	return conn, nil
}

func fileConn(ctx context.Context, fd int, cfg *Config) (*Conn, error) {
	if err := sys.IsSeqpacket(fd); err != nil {
		return nil, err
	}
	if err := sys.SetNonblock(fd, false); err != nil {
		return nil, err
	}
	params := cfg.params()
	if err := writeHandshake(ctx, fd, wire.TypeHello, &params, nil); err != nil {
		return nil, err
	}
	h, payload, err := readHandshake(ctx, fd)
	if err != nil {
		return nil, err
	}
	if h.Type != wire.TypeHello {
		return nil, protocolErrorf("peer answered hello with a %v message", h.Type)
	}
	peer, _, err := parseHandshake(payload)
	if err != nil {
		return nil, err
	}
	return newConn(fd, cfg, peer), nil
}

// SocketPair returns a connected pair of kalpc-capable sockets, for a
// broker that creates a channel and hands each end to a different process
// (see FileConn). The caller owns both files.
func SocketPair() (*os.File, *os.File, error) {
	if err := checkPlatform("socket pair"); err != nil {
		return nil, nil, err
	}
	a, b, err := sys.SeqpacketPair()
	if err != nil {
		return nil, nil, fmt.Errorf("alpc: %w", err)
	}
	return os.NewFile(uintptr(a), "alpc-channel"), os.NewFile(uintptr(b), "alpc-channel"), nil
}
