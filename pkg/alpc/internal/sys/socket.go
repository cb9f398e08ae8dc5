package sys

import (
	"errors"
	"os"
	"sync/atomic"
)

// ErrClosed is returned when an operation is attempted on a closed Socket.
var ErrClosed = os.ErrClosed

// Socket owns a socket file descriptor. Every system call on it holds a
// reference; Close marks the socket closing, shuts it down (which wakes any
// thread blocked in recvmsg, sendmsg or poll on it) and the descriptor itself
// is closed by whichever of Close or the last in-flight call comes last.
// This rules out the classic race where a descriptor number is closed and
// reused while another goroutine is still blocked on it.
type Socket struct {
	fd int
	// state is refs<<1 | closingBit.
	state atomic.Int64
	done  chan struct{}
}

const closingBit = 1

// NewSocket takes ownership of fd.
func NewSocket(fd int) *Socket {
	return &Socket{fd: fd, done: make(chan struct{})}
}

// Acquire takes a reference on the descriptor for one system call and
// returns it, or returns ErrClosed if the socket is closing.
func (s *Socket) Acquire() (int, error) {
	for {
		st := s.state.Load()
		if st&closingBit != 0 {
			return -1, ErrClosed
		}
		if s.state.CompareAndSwap(st, st+2) {
			return s.fd, nil
		}
	}
}

// Release drops a reference taken by Acquire.
func (s *Socket) Release() {
	if s.state.Add(-2) == closingBit {
		s.finalClose()
	}
}

// Close shuts the socket down and arranges for its descriptor to be closed
// once the last in-flight system call returns. It does not wait; use Done.
// Calling Close more than once returns ErrClosed.
func (s *Socket) Close() error {
	for {
		st := s.state.Load()
		if st&closingBit != 0 {
			return ErrClosed
		}
		if s.state.CompareAndSwap(st, st|closingBit) {
			// Wake blocked readers, writers and pollers. Errors (ENOTCONN on
			// a socket whose peer is gone) do not matter here.
			_ = Shutdown(s.fd)
			if st == 0 {
				s.finalClose()
			}
			return nil
		}
	}
}

// Done is closed once the descriptor itself has been closed.
func (s *Socket) Done() <-chan struct{} { return s.done }

func (s *Socket) finalClose() {
	_ = Close(s.fd)
	close(s.done)
}

// Detach hands the raw descriptor to the caller, who then owns it. It fails
// if the socket is in use or closing.
func (s *Socket) Detach() (int, error) {
	if !s.state.CompareAndSwap(0, closingBit) {
		return -1, errors.New("socket in use or closed")
	}
	close(s.done)
	return s.fd, nil
}

// Cred is a peer's credentials as reported by the kernel.
type Cred struct {
	PID int32
	UID uint32
	GID uint32
}
