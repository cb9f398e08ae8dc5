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
}

func (e *LimitError) Error() string {
	var s string
	if strings.HasSuffix(e.Limit, "Timeout") {
		s = fmt.Sprintf("alpc: %s (%v) reached", e.Limit, time.Duration(e.Value))
	} else {
		s = fmt.Sprintf("alpc: %s (%d) reached", e.Limit, e.Value)
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

// Code classifies an error returned by a peer's handler.
type Code uint32

// Error codes. The values are part of the protocol.
const (
	// CodeUnknown is used for handler errors that carry no code.
	CodeUnknown Code = 1
	// CodeCanceled: the call was cancelled.
	CodeCanceled Code = 2
	// CodeDeadlineExceeded: the call's deadline passed.
	CodeDeadlineExceeded Code = 3
	// CodeUnimplemented: the peer has no handler.
	CodeUnimplemented Code = 4
	// CodeInternal: the peer's handler panicked or failed internally.
	CodeInternal Code = 5
	// CodeInvalidArgument: the handler refused the request's content.
	CodeInvalidArgument Code = 6
	// CodeResourceExhausted: the handler's reply could not be sent within limits.
	CodeResourceExhausted Code = 7
	// CodePermissionDenied: the handler refused the caller.
	CodePermissionDenied Code = 8
	// CodeUnavailable: the handler cannot serve now.
	CodeUnavailable Code = 9
)

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
