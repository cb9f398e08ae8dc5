package alpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

var (
	// ErrClosed is returned by operations on a Conn or Listener that was
	// closed locally. It is net.ErrClosed, so code written for the net
	// package recognises it.
	ErrClosed = net.ErrClosed

	// ErrPeerClosed means the peer closed the connection or its process
	// died. Pending calls fail with it as soon as the kernel reports the
	// hang-up.
	ErrPeerClosed = errors.New("alpc: peer closed the connection")

	// ErrRejected matches every *RejectError.
	ErrRejected = errors.New("alpc: connection rejected")

	// ErrTooLarge means a message exceeds the connection's maximum message
	// size (or, where shared-memory sections are unavailable, its inline
	// limit).
	ErrTooLarge = errors.New("alpc: message too large")

	// ErrProtocol matches every *ProtocolError.
	ErrProtocol = errors.New("alpc: protocol violation")

	// ErrNoPort means nothing listens at the port's path: no socket there,
	// or a stale one whose server is gone.
	ErrNoPort = errors.New("alpc: no connection port is listening")

	// ErrPortInUse means another live process already listens on the port.
	ErrPortInUse = errors.New("alpc: port in use")

	// ErrLimit matches every *LimitError.
	ErrLimit = errors.New("alpc: limit reached")
)

// RejectError is returned by Dial when the server rejects the connection.
type RejectError struct {
	// Reason is the server's explanation, as given to ConnRequest.Reject.
	Reason string
}

func (e *RejectError) Error() string {
	if e.Reason == "" {
		return "alpc: connection rejected"
	}
	return "alpc: connection rejected: " + e.Reason
}

// Is reports whether target is ErrRejected.
func (e *RejectError) Is(target error) bool { return target == ErrRejected }

// ProtocolError means the peer sent something the protocol forbids. The
// connection is closed when it happens; the error says what was wrong.
type ProtocolError struct {
	Reason string
}

func (e *ProtocolError) Error() string { return "alpc: protocol violation by peer: " + e.Reason }

// Is reports whether target is ErrProtocol.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

func protocolErrorf(format string, args ...any) error {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

func asProtocolError(err error) error {
	var we *wire.Error
	if errors.As(err, &we) {
		return &ProtocolError{Reason: we.Reason}
	}
	return err
}

// LimitError reports that a configured limit stopped an operation.
type LimitError struct {
	// Limit names the limit, as in the Config field (for example "MaxPendingCalls").
	Limit string
	// Value is the limit's value (in nanoseconds for a timeout).
	Value int64
	// Err is the underlying cause, if any (for example a context error while
	// waiting for a slot).
	Err error
	// Policy names the ConnectionPort field that lowered the limit on this
	// connection (for example "messagePolicy.maxSectionBytesPerConnection")
	// when it came from a brokered port's Policy rather than this side's
	// Config; raising the Config does not help then, changing the port does.
	Policy string
}

func (e *LimitError) Error() string {
	var s string
	if strings.HasSuffix(e.Limit, "Timeout") {
		s = fmt.Sprintf("alpc: %s (%v) reached", e.Limit, time.Duration(e.Value))
	} else {
		s = fmt.Sprintf("alpc: %s (%d) reached", e.Limit, e.Value)
	}
	if e.Policy != "" {
		s += ", limited by the port's " + e.Policy
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is reports whether target is ErrLimit.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// Unwrap returns the underlying cause.
func (e *LimitError) Unwrap() error { return e.Err }

// Code classifies an error returned by a peer's handler: the caller
// receives it in RemoteError.Code. The values are part of the protocol:
//
//   - 1 CodeUnknown: the handler's error carried no code
//   - 2 CodeCanceled: the call was cancelled
//   - 3 CodeDeadlineExceeded: the call's deadline passed
//   - 4 CodeUnimplemented: the peer has no Handler
//   - 5 CodeInternal: the peer's handler panicked or failed internally
//   - 6 CodeInvalidArgument: the handler refused the request's content
//   - 7 CodeResourceExhausted: the reply could not be sent within limits
//   - 8 CodePermissionDenied: the handler refused the caller
//   - 9 CodeUnavailable: the handler cannot serve now; retry later
//
// A handler returns one with Errorf.
type Code uint32

// CodeUnknown is the code of a handler error that carries none: any error
// other than one made with Errorf or a context error.
const CodeUnknown Code = 1

// CodeCanceled means the call was cancelled (the caller's context, or a
// handler that returned context.Canceled). errors.Is(err,
// context.Canceled) holds for it.
const CodeCanceled Code = 2

// CodeDeadlineExceeded means the call's deadline passed before the handler
// answered. errors.Is(err, context.DeadlineExceeded) holds for it.
const CodeDeadlineExceeded Code = 3

// CodeUnimplemented means the peer has no Handler (Config.Handler is nil).
const CodeUnimplemented Code = 4

// CodeInternal means the peer's handler panicked or failed internally.
const CodeInternal Code = 5

// CodeInvalidArgument means the handler refused the request's content.
const CodeInvalidArgument Code = 6

// CodeResourceExhausted means the handler's reply could not be sent within
// the connection's limits (for example larger than MaxMessageSize).
const CodeResourceExhausted Code = 7

// CodePermissionDenied means the handler refused the caller.
const CodePermissionDenied Code = 8

// CodeUnavailable means the handler cannot serve now; retrying later may
// succeed.
const CodeUnavailable Code = 9

var codeNames = map[Code]string{
	CodeUnknown: "unknown", CodeCanceled: "canceled", CodeDeadlineExceeded: "deadline exceeded",
	CodeUnimplemented: "unimplemented", CodeInternal: "internal", CodeInvalidArgument: "invalid argument",
	CodeResourceExhausted: "resource exhausted", CodePermissionDenied: "permission denied",
	CodeUnavailable: "unavailable",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code(%d)", uint32(c))
}

// RemoteError is an error returned by the peer's handler, as received by
// the caller of Call.
type RemoteError struct {
	Code    Code
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("alpc: remote error (%v): %s", e.Code, e.Message)
}

// Is lets errors.Is(err, context.Canceled) and
// errors.Is(err, context.DeadlineExceeded) hold for the matching codes, so
// callers can treat a deadline that expired at the peer like a local one.
func (e *RemoteError) Is(target error) bool {
	switch target {
	case context.Canceled:
		return e.Code == CodeCanceled
	case context.DeadlineExceeded:
		return e.Code == CodeDeadlineExceeded
	}
	return false
}

// Errorf returns an error with the given code for a Handler to return; the
// caller receives it as a *RemoteError with the same code and message.
func Errorf(code Code, format string, args ...any) error {
	return &RemoteError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// errorToWire maps a handler's error to a code and message.
func errorToWire(err error) (Code, string) {
	var re *RemoteError
	switch {
	case errors.As(err, &re):
		return re.Code, re.Message
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadlineExceeded, err.Error()
	case errors.Is(err, context.Canceled):
		return CodeCanceled, err.Error()
	}
	return CodeUnknown, err.Error()
}
