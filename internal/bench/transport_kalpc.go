package bench

import (
	"context"
	"errors"
	"fmt"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// kalpcCallTransport measures alpc.Conn.Call. "kalpc-inline" uses the
// default Config, so payloads up to alpc.DefaultInlineLimit are copied
// through the socket queue. "kalpc-section" sets the client's InlineLimit to
// alpc.MinInlineLimit so that every payload above it travels through a
// shared-memory section (copy in, copy out), the technique Call picks by
// itself above the inline limit.
type kalpcCallTransport struct{ name string }

func (t kalpcCallTransport) Info() Info {
	if t.name == "kalpc-section" {
		return Info{
			Name:      t.name,
			Label:     "kalpc section copy (Call)",
			Path:      "alpc.Conn.Call with payloads in a memfd section; a small descriptor through AF_UNIX SOCK_SEQPACKET",
			Placement: CrossNamespace,
		}
	}
	return Info{
		Name:      t.name,
		Label:     "kalpc inline (Call)",
		Path:      "alpc.Conn.Call, payload copied through the AF_UNIX SOCK_SEQPACKET queue",
		Placement: CrossNamespace,
	}
}

func (t kalpcCallTransport) section() bool { return t.name == "kalpc-section" }

func (t kalpcCallTransport) Available(_ Env, size int) error {
	if t.section() {
		if size <= alpc.MinInlineLimit {
			return unavailable("%s is at most the smallest inline limit (%s): always sent inline", FormatSize(int64(size)), FormatSize(alpc.MinInlineLimit))
		}
		return nil
	}
	if size > alpc.DefaultInlineLimit {
		return unavailable("%s exceeds the inline limit (%s); Call uses a section (see kalpc-section)", FormatSize(int64(size)), FormatSize(alpc.DefaultInlineLimit))
	}
	return nil
}

func (t kalpcCallTransport) Serve(ctx context.Context, cell Cell) (string, error) {
	return serveKalpc(ctx, cell, nil)
}

// serveKalpc listens on cell.SocketPath and accepts every client; its
// handler answers each request with cell.ReplySize bytes (the request itself
// when they are the same size).
func serveKalpc(ctx context.Context, cell Cell, cfg *alpc.Config) (string, error) {
	if cfg == nil {
		cfg = &alpc.Config{}
	}
	reply := newPayload(cell.ReplySize)
	cfg.Handler = alpc.HandlerFunc(func(_ context.Context, req *alpc.Request) ([]byte, error) {
		p := req.Payload()
		if len(p) != cell.Size {
			return nil, alpc.Errorf(alpc.CodeInvalidArgument, "request of %d B, want %d B", len(p), cell.Size)
		}
		if cell.ReplySize == cell.Size {
			return p, nil
		}
		return reply, nil
	})
	l, err := alpc.Listen(cell.SocketPath, cfg)
	if err != nil {
		return "", err
	}
	go func() {
		<-ctx.Done()
		_ = l.Close()
	}()
	go func() {
		for {
			r, err := l.Accept(ctx)
			if err != nil {
				return
			}
			conn, err := r.Accept(nil)
			if err != nil {
				continue
			}
			go func() {
				select {
				case <-ctx.Done():
				case <-conn.Done():
				}
				_ = conn.Close()
			}()
		}
	}()
	return cell.SocketPath, nil
}

func (t kalpcCallTransport) Dial(ctx context.Context, cell Cell, addr string) (Client, error) {
	cfg := &alpc.Config{}
	if t.section() {
		cfg.InlineLimit = alpc.MinInlineLimit
	}
	conn, err := alpc.Dial(ctx, addr, []byte("kalpc-bench"), cfg)
	if err != nil {
		return nil, err
	}
	return &kalpcClient{conn: conn, payload: newPayload(cell.Size), replySize: cell.ReplySize}, nil
}

type kalpcClient struct {
	conn      *alpc.Conn
	payload   []byte
	replySize int
}

func (c *kalpcClient) RoundTrip(ctx context.Context) error {
	out, err := c.conn.Call(ctx, c.payload)
	if err != nil {
		if errors.Is(err, alpc.ErrTooLarge) {
			// Sections have not landed in pkg/alpc: Call refuses payloads
			// above the inline limit.
			return unavailable("pkg/alpc has no sections yet: Call refuses %s (%v)", FormatSize(int64(len(c.payload))), err)
		}
		return err
	}
	if len(out) != c.replySize {
		return fmt.Errorf("reply of %d B, want %d B", len(out), c.replySize)
	}
	return nil
}

func (c *kalpcClient) Close() error { return c.conn.Close() }

// kalpcLoanTransport will measure zero-copy loans: the client borrows a
// buffer in its section, writes the payload there and sends it; the server
// takes a read-only view. pkg/alpc has no loan API yet, so every cell is
// reported unavailable. When the API lands, implement Serve and Dial here
// (and drop the Available check); nothing else in the harness changes.
type kalpcLoanTransport struct{}

func (kalpcLoanTransport) Info() Info {
	return Info{
		Name:      "kalpc-loan",
		Label:     "kalpc loan (zero-copy)",
		Path:      "a buffer loaned from the client's memfd section, sent by descriptor; the server reads a read-only view",
		Placement: CrossNamespace,
	}
}

func (kalpcLoanTransport) Available(Env, int) error {
	return unavailable("pkg/alpc has no zero-copy loan API yet")
}

func (kalpcLoanTransport) Serve(context.Context, Cell) (string, error) {
	return "", kalpcLoanTransport{}.Available(Env{}, 0)
}

func (kalpcLoanTransport) Dial(context.Context, Cell, string) (Client, error) {
	return nil, kalpcLoanTransport{}.Available(Env{}, 0)
}
