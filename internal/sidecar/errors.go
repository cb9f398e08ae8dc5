package sidecar

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/internal/peertext"
	"github.com/kalpc/kalpc/internal/sidecar/identity"
	"github.com/kalpc/kalpc/internal/sidecar/metrics"
	"github.com/kalpc/kalpc/internal/sidecar/policy"
)

// refusal is a failure with the code the requester receives.
type refusal struct {
	code ctl.Code
	err  error
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func refuse(code ctl.Code, format string, args ...any) error {
	return &refusal{code: code, err: fmt.Errorf(format, args...)}
}

// refusalMessage is the message that refuses request id (0 for a
// connection's first request): t is TypeError to an application and
// TypePeerRefused to a client sidecar. It is the one place a refusal's
// reason is made safe to send (package peertext): valid UTF-8, at most
// what the protocol carries.
func refusalMessage(t ctl.Type, id uint64, code ctl.Code, reason string) *ctl.Message {
	return &ctl.Message{Type: t, ID: id, Code: code, Reason: peertext.Truncate(reason, ctl.MaxErrorMessage)}
}

// errServerIdentity marks a server endpoint that failed verification; the
// client sidecar tries the next one.
var errServerIdentity = errors.New("server identity not verified")

// unverifiableError marks a server endpoint whose identity could not be
// checked now (the API server is unreachable): nothing is known against
// it, but it is not verified either.
type unverifiableError struct{ err error }

func (e *unverifiableError) Error() string {
	return "server identity cannot be verified now: " + e.err.Error()
}
func (e *unverifiableError) Unwrap() error { return e.err }

// checkUnavailable reports whether err says a check could not be made
// (as opposed to made and failed): an API read that failed, or a refusal
// marked unavailable. Anything else a check returns counts as failed.
func checkUnavailable(err error) bool {
	var r *refusal
	if errors.As(err, &r) {
		return r.code == ctl.CodeUnavailable
	}
	return errors.Is(err, policy.ErrUnavailable)
}

// errEndpointGone marks a server endpoint that went away mid-handshake.
var errEndpointGone = errors.New("server endpoint went away")

// errEndpointSilent marks a server endpoint that accepted but did not
// answer within EndpointAnswerTimeout: not a live server sidecar.
var errEndpointSilent = errors.New("server endpoint did not answer")

// errEndpointBusy marks a server endpoint whose sidecar refused the
// connection for want of room (MaxPeerConnections).
var errEndpointBusy = errors.New("server endpoint busy")

// codeOf returns the code a requester receives for err.
func codeOf(err error) ctl.Code {
	var r *refusal
	switch {
	case errors.As(err, &r):
		return r.code
	case errors.Is(err, policy.ErrUnavailable):
		return ctl.CodeUnavailable
	case errors.Is(err, policy.ErrPortNotFound):
		return ctl.CodePortNotFound
	case errors.Is(err, policy.ErrNotServer):
		return ctl.CodeNotServer
	case errors.Is(err, policy.ErrDenied):
		return ctl.CodeDenied
	case errors.Is(err, identity.ErrUnauthenticated):
		return ctl.CodeUnauthenticated
	case errors.Is(err, errServerIdentity):
		return ctl.CodeServerIdentity
	}
	return ctl.CodeUnavailable
}

var results = map[ctl.Code]string{
	ctl.CodePortNotFound: metrics.ResultPortNotFound, ctl.CodeNotServer: metrics.ResultNotServer,
	ctl.CodeDenied: metrics.ResultDenied, ctl.CodeUnauthenticated: metrics.ResultUnauthenticated,
	ctl.CodeServerIdentity: metrics.ResultServerIdentity, ctl.CodeNoServer: metrics.ResultNoServer,
	ctl.CodeRejected: metrics.ResultRejected, ctl.CodeLimit: metrics.ResultLimit,
	ctl.CodeUnavailable: metrics.ResultUnavailable,
}

// reasonOf is the explanation sent with a refusal: err's text without a
// leading kind of failure (policy.ErrPortNotFound and the like), which the
// code already carries and the application's library names, so that the
// application's error says it once.
func reasonOf(err error) string {
	s := err.Error()
	for _, kind := range []error{policy.ErrPortNotFound, policy.ErrNotServer, policy.ErrDenied} {
		if errors.Is(err, kind) {
			s = strings.TrimPrefix(s, kind.Error()+": ")
		}
	}
	return s
}

// resultOf returns the metrics result label of a failure code.
func resultOf(code ctl.Code) string {
	if r, ok := results[code]; ok {
		return r
	}
	return metrics.ResultError
}
