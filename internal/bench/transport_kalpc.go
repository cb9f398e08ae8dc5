package bench

import (
	"context"
	"errors"
	"fmt"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// kalpcMode is how a kalpc row moves the request.
type kalpcMode int

const (
	// kalpcInline: Call with the default Config; payloads up to
	// alpc.DefaultInlineLimit are copied through the socket queue, and the
	// handler takes its copy with req.Payload().
	kalpcInline kalpcMode = iota
	// kalpcSection: Call with the client's InlineLimit at
	// alpc.MinInlineLimit, so every payload above it is copied into a
	// shared-memory section (the technique Call picks by itself above the
	// inline limit); the handler reads it in place with req.View().
	kalpcSection
	// kalpcLoan: the client borrows a buffer in its section with Conn.Loan,
	// fills only its first bytes (the transport's cost, not the cost of
	// producing the data) and sends it with CallLoan; the handler reads it
	// in place with req.View().
	kalpcLoan
	// kalpcCall: what an application written from the docs does, at every
	// size: Call with the default Config (inline up to
	// alpc.DefaultInlineLimit, a section above it, chosen by Call), and a
	// handler that takes its copy with req.Payload().
	kalpcCall
)

// loanHeader is how many bytes of a loan the client writes per round trip.
const loanHeader = 64

type kalpcTransport struct{ mode kalpcMode }

func (t kalpcTransport) Info() Info {
	switch t.mode {
	case kalpcSection:
		return Info{
			Name:      "kalpc-section",
			Label:     "kalpc section copy (Call)",
			Path:      "alpc.Conn.Call copies the payload into a sealed memfd section; a descriptor crosses AF_UNIX SOCK_SEQPACKET; the handler reads it in place (Request.View)",
			Placement: CrossNamespace,
		}
	case kalpcLoan:
		return Info{
			Name:      "kalpc-loan",
			Label:     "kalpc loan (zero-copy)",
			Path:      "alpc.Conn.Loan + CallLoan: the client fills a buffer inside its section (64 B written per call) and sends it by descriptor; the handler reads it in place (Request.View)",
			Placement: CrossNamespace,
		}
	case kalpcCall:
		return Info{
			Name:      "kalpc-call",
			Label:     "kalpc Call + Payload (default path)",
			Path:      "alpc.Conn.Call with the default Config at every size (inline up to 63 KiB, a section above it); the handler takes Request.Payload (a copy): what an application written from the docs does",
			Placement: CrossNamespace,
		}
	}
	return Info{
		Name:      "kalpc-inline",
		Label:     "kalpc inline (Call)",
		Path:      "alpc.Conn.Call, payload copied through the AF_UNIX SOCK_SEQPACKET queue; the handler takes Request.Payload",
		Placement: CrossNamespace,
	}
}

func (t kalpcTransport) Available(_ Env, size int) error {
	switch t.mode {
	case kalpcSection:
		if size <= alpc.MinInlineLimit {
			return unavailable("%s is at most the smallest inline limit (%s): always sent inline", FormatSize(int64(size)), FormatSize(alpc.MinInlineLimit))
		}
	case kalpcInline:
		if size > alpc.DefaultInlineLimit {
			return unavailable("%s exceeds the inline limit (%s); Call uses a section (see kalpc section copy)", FormatSize(int64(size)), FormatSize(alpc.DefaultInlineLimit))
		}
	}
	return nil
}

// Serve listens on cell.SocketPath and accepts every client; its handler
// answers each request with cell.ReplySize bytes (the request itself when
// they are the same size).
func (t kalpcTransport) Serve(ctx context.Context, cell Cell) (string, error) {
	reply := newPayload(cell.ReplySize)
	handler := alpc.HandlerFunc(func(_ context.Context, req *alpc.Request) ([]byte, error) {
		// The Payload modes own their copy: an echo returns it, as an
		// application would. A View's memory goes back to the peer, so its
		// echo is a copy.
		var p []byte
		owned := t.mode == kalpcInline || t.mode == kalpcCall
		if owned {
			p = req.Payload()
		} else {
			v := req.View()
			defer v.Release()
			p = v.Bytes()
		}
		switch {
		case len(p) != cell.Size:
			return nil, alpc.Errorf(alpc.CodeInvalidArgument, "request of %d B, want %d B", len(p), cell.Size)
		case cell.ReplySize != cell.Size:
			return reply, nil
		case owned:
			return p, nil
		}
		return append([]byte(nil), p...), nil
	})
	l, err := alpc.Listen(cell.SocketPath, &alpc.Config{Handler: handler})
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

func (t kalpcTransport) Dial(ctx context.Context, cell Cell, addr string) (Client, error) {
	cfg := &alpc.Config{}
	if t.mode == kalpcSection {
		cfg.InlineLimit = alpc.MinInlineLimit
	}
	conn, err := alpc.Dial(ctx, addr, []byte("kalpc-bench"), cfg)
	if err != nil {
		return nil, err
	}
	c := &kalpcClient{conn: conn, mode: t.mode, size: cell.Size, replySize: cell.ReplySize}
	if t.mode != kalpcLoan {
		c.payload = newPayload(cell.Size)
	}
	return c, nil
}

type kalpcClient struct {
	conn      *alpc.Conn
	mode      kalpcMode
	size      int
	payload   []byte
	replySize int
}

func (c *kalpcClient) RoundTrip(ctx context.Context) error {
	var out []byte
	var err error
	if c.mode == kalpcLoan {
		var l *alpc.Loan
		if l, err = c.conn.Loan(ctx, c.size); err != nil {
			return fmt.Errorf("loan: %w", err)
		}
		b := l.Bytes()
		for i := range b[:min(len(b), loanHeader)] {
			b[i] = byte(i)
		}
		out, err = c.conn.CallLoan(ctx, l)
	} else {
		out, err = c.conn.Call(ctx, c.payload)
	}
	if err != nil {
		if errors.Is(err, alpc.ErrTooLarge) {
			return unavailable("pkg/alpc refuses %s: %v", FormatSize(int64(c.size)), err)
		}
		return err
	}
	if len(out) != c.replySize {
		return fmt.Errorf("reply of %d B, want %d B", len(out), c.replySize)
	}
	return nil
}

func (c *kalpcClient) Close() error { return c.conn.Close() }
