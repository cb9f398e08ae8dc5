package alpc

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// Loan is a buffer inside this side's shared-memory section, lent to the
// caller to fill in place and then send without a copy (zero-copy send).
// Ownership moves at each verb:
//
//	l, _ := conn.Loan(ctx, n) // the caller owns l's memory: write into l.Bytes()
//	conn.SendLoan(ctx, l)     // the peer owns it now; l is spent
//	l.Release()               // or: give it back without sending
//
// Bytes panics once the Loan is sent or released; a slice obtained earlier
// must not be used after that.
type Loan struct {
	c     *Conn
	buf   buffer
	state atomic.Int32
}

const (
	loanOwned int32 = iota
	loanSpent
)

// ErrLoanSpent is returned when sending a Loan that was already sent or
// released.
var ErrLoanSpent = errors.New("alpc: loan already sent or released")

// Loan borrows an n-byte buffer in a shared-memory section of this
// connection, waiting (until ctx ends) for the peer to release memory if
// the connection's MaxSectionBytes is in use. The peer must accept
// sections (any kalpc peer does).
func (c *Conn) Loan(ctx context.Context, n int) (*Loan, error) {
	if n < 0 || int64(n) > c.lim.maxMessage {
		return nil, c.tooLarge(fmt.Sprintf("a %d-byte loan", n))
	}
	if !c.lim.sections {
		return nil, fmt.Errorf("alpc: loan: %w", c.sectionsDisabled(int64(n)))
	}
	b, err := c.alloc(ctx, int64(n))
	if err != nil {
		return nil, err
	}
	return &Loan{c: c, buf: b}, nil
}

// Bytes returns the loaned memory, writable by the caller until the Loan is
// sent or released.
func (l *Loan) Bytes() []byte {
	if l.state.Load() != loanOwned {
		panic(errReleased)
	}
	return l.buf.bytes()
}

// Len returns the loan's size.
func (l *Loan) Len() int { return int(l.buf.n) }

// Release gives an unsent loan back. Calling it on a sent or released Loan
// does nothing.
func (l *Loan) Release() {
	if !l.state.CompareAndSwap(loanOwned, loanSpent) {
		return
	}
	_ = l.c.freeBuffer(l.buf.sec.id, l.buf.off, l.buf.n, false)
	l.c.unrefOut(l.buf.sec)
}

// spend hands the loan's buffer to a send; the loan is spent whatever the
// outcome (a failed send frees the buffer).
func (l *Loan) spend(c *Conn) (buffer, error) {
	if l.c != c {
		return buffer{}, errors.New("alpc: loan belongs to another connection")
	}
	if !l.state.CompareAndSwap(loanOwned, loanSpent) {
		return buffer{}, ErrLoanSpent
	}
	return l.buf, nil
}

func (c *Conn) sendLoan(ctx context.Context, h *wire.Header, l *Loan) error {
	b, err := l.spend(c)
	if err != nil {
		return err
	}
	defer c.unrefOut(b.sec)
	return c.writeRef(ctx, h, b)
}

// SendLoan sends the loan's memory as a one-way message without copying it.
// The loan is spent: the peer owns the memory until it releases it.
func (c *Conn) SendLoan(ctx context.Context, l *Loan) error {
	if l.state.Load() != loanOwned {
		return ErrLoanSpent
	}
	return c.oneWay(ctx, l.Len(), func(h *wire.Header) error { return c.sendLoan(ctx, h, l) })
}

// CallLoan calls the peer with the loan's memory as the request, without
// copying it, and returns the reply as Call does. The loan is spent.
func (c *Conn) CallLoan(ctx context.Context, l *Loan) ([]byte, error) {
	if l.state.Load() != loanOwned {
		return nil, ErrLoanSpent
	}
	r, err := c.roundTrip(ctx, l.Len(), func(h *wire.Header) error { return c.sendLoan(ctx, h, l) })
	if err != nil {
		return nil, err
	}
	return r.take(c), nil
}

// CallLoanView is CallLoan, but the reply is returned as CallView returns
// it: a reply in shared memory is read in place until the View is released.
// Both directions then travel without a copy.
func (c *Conn) CallLoanView(ctx context.Context, l *Loan) (*View, error) {
	if l.state.Load() != loanOwned {
		return nil, ErrLoanSpent
	}
	r, err := c.roundTrip(ctx, l.Len(), func(h *wire.Header) error { return c.sendLoan(ctx, h, l) })
	if err != nil {
		return nil, err
	}
	return newView(c, r.payload, r.sp), nil
}

// ReplyLoan makes l's memory the reply to this call, sent without a copy
// when the handler returns. The handler must then return nil bytes and a
// nil error; if it returns an error (or panics) instead, the loan is
// released and the error is sent. The loan must come from r.Conn(). It is
// spent from this point: do not write to it after the handler returns.
// ReplyLoan fails for one-way requests (they have no reply) and if a reply
// loan is already set.
func (r *Request) ReplyLoan(l *Loan) error {
	switch {
	case r.oneWay:
		return errors.New("alpc: ReplyLoan: a one-way request has no reply")
	case l == nil || l.c != r.conn:
		return errors.New("alpc: ReplyLoan: the loan belongs to another connection")
	case l.state.Load() != loanOwned:
		return ErrLoanSpent
	case r.replyLoan != nil:
		return errors.New("alpc: ReplyLoan: the request already has a reply loan")
	}
	r.replyLoan = l
	return nil
}
