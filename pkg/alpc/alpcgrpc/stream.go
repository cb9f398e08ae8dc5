package alpcgrpc

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// stream is one end's state of a native stream (or of a unary call whose
// request or response is too large to travel inline): the messages
// received from the peer, and the flow-control window of the messages sent
// to it.
type stream struct {
	id   uint64
	conn *alpc.Conn

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change

	// Receiving.
	msgs     [][]byte // complete messages not yet consumed
	partial  []byte   // fragments of the next message
	frames   uint64   // header and message frames received
	maxRecv  int      // largest message accepted
	recvErr  error    // a message broke a limit; the stream is unusable
	unacked  int      // bytes consumed and not yet credited to the peer
	header   metadata.MD
	gotHdr   bool
	ended    bool // server: the client sends no more messages (kindEnd)
	done     bool // server: the client is done with the stream (kindDone)
	finished bool // the stream has its final status (client) or handler returned (server)

	// Sending.
	outstanding int // bytes sent and not yet credited by the peer
}

func newStream(id uint64, conn *alpc.Conn, maxRecv int) *stream {
	return &stream{id: id, conn: conn, maxRecv: maxRecv, changed: make(chan struct{})}
}

func (s *stream) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// wait releases s.mu until something changes, ctx ends or the connection
// does, then takes it again.
func (s *stream) wait(ctx context.Context) {
	ch := s.changed
	s.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	case <-s.conn.Done():
	}
	s.mu.Lock()
}

// receive handles a one-way frame for the stream.
func (s *stream) receive(f *oneWayFrame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.broadcastLocked()
	switch f.kind {
	case kindMsg:
		if s.recvErr != nil {
			return
		}
		if len(s.partial)+len(f.data) > s.maxRecv {
			s.recvErr = status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", len(s.partial)+len(f.data), s.maxRecv)
			s.partial = nil
			return
		}
		if f.flags&flagMore != 0 {
			s.partial = append(s.partial, f.data...)
			return
		}
		msg := f.data
		if s.partial != nil {
			s.partial = append(s.partial, f.data...)
			msg, s.partial = s.partial, nil
		}
		s.msgs = append(s.msgs, msg)
		s.frames++
	case kindHeader:
		s.header, s.gotHdr = f.md, true
		s.frames++
	case kindEnd:
		s.ended = true
	case kindDone:
		s.done = true
	case kindWindow:
		s.outstanding = max(0, s.outstanding-int(min(f.n, uint64(s.outstanding))))
	}
}

// consumed credits n consumed bytes to the peer once enough have added up.
// s.mu must be held; it is released while sending.
func (s *stream) consumedLocked(n int) {
	s.unacked += n
	if s.unacked < streamWindow/4 {
		return
	}
	credit := s.unacked
	s.unacked = 0
	s.mu.Unlock()
	e := encoder{b: appendControl(make([]byte, 0, 24), kindWindow, s.id)}
	e.uint(uint64(credit))
	_ = s.conn.Send(context.Background(), e.b)
	s.mu.Lock()
}

// sendMsg sends one message frame. frame holds the message's bytes after
// headroom bytes of free space (at least msgHeaderSize). It waits for room
// in the stream's window.
func (s *stream) sendMsg(ctx context.Context, frame []byte, headroom int, stop func() bool) error {
	data := frame[headroom:]
	s.mu.Lock()
	for s.outstanding >= streamWindow {
		if stop != nil && stop() {
			s.mu.Unlock()
			return errStreamStopped
		}
		if err := ctx.Err(); err != nil {
			s.mu.Unlock()
			return err
		}
		if err := s.conn.Err(); err != nil {
			s.mu.Unlock()
			return err
		}
		s.wait(ctx)
	}
	s.outstanding += len(data)
	s.mu.Unlock()
	return sendFragmented(ctx, s.conn, s.id, frame, headroom)
}

// errStreamStopped means the stream ended while a sender waited.
var errStreamStopped = errors.New("stream ended")

// sendFragmented sends a kindMsg frame whose data follows headroom bytes of
// frame, in one kalpc message if the connection takes it, else in
// fragments of at most the inline limit.
func sendFragmented(ctx context.Context, conn *alpc.Conn, id uint64, frame []byte, headroom int) error {
	data := frame[headroom:]
	limit := conn.Limits().InlineLimit
	var hdr [msgHeaderSize]byte
	h := appendMsgHeader(hdr[:0], id, 0)
	if len(h)+len(data) <= limit || largeMessages {
		start := headroom - len(h)
		copy(frame[start:], h)
		err := conn.Send(ctx, frame[start:])
		if !errors.Is(err, alpc.ErrTooLarge) || len(h)+len(data) <= limit {
			return err
		}
	}
	buf := make([]byte, 0, limit)
	for len(data) > 0 {
		flags := byte(0)
		n := limit - msgHeaderSize
		if len(data) > n {
			flags = flagMore
		} else {
			n = len(data)
		}
		buf = append(appendMsgHeader(buf[:0], id, flags), data[:n]...)
		if err := conn.Send(ctx, buf); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// largeMessages says whether kalpc carries messages larger than the inline
// limit (in shared-memory sections, which every kalpc peer takes). When it
// does, messages travel whole; sendFragmented still falls back to fragments
// if a peer refuses a large message with alpc.ErrTooLarge.
const largeMessages = true

// toStatus converts an error from the kalpc layer to a gRPC status error.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return status.FromContextError(err).Err()
	case errors.Is(err, alpc.ErrPeerClosed), errors.Is(err, alpc.ErrClosed):
		return status.Errorf(codes.Unavailable, "kalpc connection closed: %v", err)
	case errors.Is(err, alpc.ErrGoingAway):
		return status.Errorf(codes.Unavailable, "kalpc connection shutting down, call not sent: %v", err)
	case errors.Is(err, alpc.ErrTooLarge):
		return status.Errorf(codes.ResourceExhausted, "%v", err)
	case errors.Is(err, alpc.ErrLimit):
		return status.Errorf(codes.ResourceExhausted, "%v", err)
	}
	var re *alpc.RemoteError
	if errors.As(err, &re) {
		return status.Error(alpcCodes[re.Code], re.Message)
	}
	return status.Errorf(codes.Unavailable, "kalpc: %v", err)
}

var alpcCodes = map[alpc.Code]codes.Code{
	alpc.CodeUnknown:           codes.Unknown,
	alpc.CodeCanceled:          codes.Canceled,
	alpc.CodeDeadlineExceeded:  codes.DeadlineExceeded,
	alpc.CodeUnimplemented:     codes.Unimplemented,
	alpc.CodeInternal:          codes.Internal,
	alpc.CodeInvalidArgument:   codes.InvalidArgument,
	alpc.CodeResourceExhausted: codes.ResourceExhausted,
	alpc.CodePermissionDenied:  codes.PermissionDenied,
	alpc.CodeUnavailable:       codes.Unavailable,
}

// sendMsgOrdered is sendMsg for a client, which sends nothing about the
// stream once *doneSent: it waits for the window outside smu and sends
// inside it.
func (s *stream) sendMsgOrdered(ctx context.Context, frame []byte, headroom int, stop func() bool, smu *sync.Mutex, doneSent *bool) error {
	s.mu.Lock()
	for s.outstanding >= streamWindow {
		if stop() {
			s.mu.Unlock()
			return errStreamStopped
		}
		if err := ctx.Err(); err != nil {
			s.mu.Unlock()
			return err
		}
		if err := s.conn.Err(); err != nil {
			s.mu.Unlock()
			return err
		}
		s.wait(ctx)
	}
	s.outstanding += len(frame) - headroom
	s.mu.Unlock()
	smu.Lock()
	defer smu.Unlock()
	if *doneSent {
		return errStreamStopped
	}
	return sendFragmented(ctx, s.conn, s.id, frame, headroom)
}

// consumedOrdered is consumedLocked for a client: the credit is sent inside
// smu unless kindDone went out. s.mu must be held; it is released while
// sending.
func (s *stream) consumedOrdered(n int, smu *sync.Mutex, doneSent *bool) {
	s.unacked += n
	if s.unacked < streamWindow/4 {
		return
	}
	credit := s.unacked
	s.unacked = 0
	s.mu.Unlock()
	smu.Lock()
	if !*doneSent {
		e := encoder{b: appendControl(make([]byte, 0, 24), kindWindow, s.id)}
		e.uint(uint64(credit))
		_ = s.conn.Send(context.Background(), e.b)
	}
	smu.Unlock()
	s.mu.Lock()
}
