package alpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/internal/peertext"
	"github.com/kalpc/kalpc/internal/podid"
)

// EnvSocket names the environment variable holding the path of the pod's
// kalpc control socket. The kalpc sidecar injector sets it in every
// application container (to /var/run/kalpc/pod/kalpc.sock); Publish and
// Connect use it.
const EnvSocket = "KALPC_SOCKET"

// Errors a broker (the kalpc sidecar) reports to Publish and Connect. Each
// is wrapped in a *BrokerError that names the operation and port and
// carries the broker's explanation. A server application's rejection is a
// *RejectError, as with Dial.
var (
	// ErrNoBroker means KALPC_SOCKET is not set (the pod has no kalpc
	// sidecar) or no broker listens on it.
	ErrNoBroker = errors.New("alpc: no kalpc broker")
	// ErrPortNotFound means no connection port of that name exists.
	ErrPortNotFound = errors.New("alpc: connection port not found")
	// ErrNotServer means this pod is not among the port's allowed servers.
	ErrNotServer = errors.New("alpc: not allowed to serve the connection port")
	// ErrAccessDenied means the port's client rules do not allow this pod.
	ErrAccessDenied = errors.New("alpc: access to the connection port denied")
	// ErrUnauthenticated means the peer broker could not verify this pod's
	// identity.
	ErrUnauthenticated = errors.New("alpc: identity not verified")
	// ErrNoServer means the port has no live server on this node.
	ErrNoServer = errors.New("alpc: no server for the connection port on this node")
	// ErrServerIdentity means no server endpoint of the port passed
	// identity verification (for example a socket planted by a pod that may
	// not serve the port).
	ErrServerIdentity = errors.New("alpc: server identity not verified")
	// ErrBrokerUnavailable means the broker cannot serve the request now;
	// retrying later may succeed.
	ErrBrokerUnavailable = errors.New("alpc: broker unavailable")
	// ErrInvalidPortName means the port name is malformed.
	ErrInvalidPortName = errors.New("alpc: invalid connection port name")
)

// BrokerError is a failed Publish, Connect or brokered accept. errors.Is
// matches it against Err (one of the errors above, ErrPortInUse, ErrLimit,
// or, off Linux, ErrUnsupported).
type BrokerError struct {
	// Op is "publish", "connect" or "accept".
	Op string
	// Port is the port, as "namespace/name" or "name".
	Port string
	// Err is the kind of failure.
	Err error
	// Reason is the broker's explanation, if any.
	Reason string
}

func (e *BrokerError) Error() string {
	kind := strings.TrimPrefix(e.Err.Error(), "alpc: ")
	s := fmt.Sprintf("alpc: %s %s: %s", e.Op, e.Port, kind)
	// A broker may start its explanation with the kind of failure too
	// (older sidecars sent "connection port not found: no ConnectionPort
	// …"): say it once.
	if r := strings.TrimPrefix(e.Reason, kind+": "); r != "" {
		s += ": " + r
	}
	return s
}

// Unwrap returns Err.
func (e *BrokerError) Unwrap() error { return e.Err }

// Identity is a peer pod's identity as verified by the broker, never as
// claimed by the peer: in Kubernetes, from its ServiceAccount token. Its
// fields are Namespace, ServiceAccount, PodName and PodUID; String
// describes it as "namespace/pod (serviceaccount SA, uid UID)".
//
// It is the one pod-identity type of kalpc, shared with the sidecar and
// carried on the control protocol as it is.
type Identity = podid.Identity

// Policy is a brokered port's message policy (a ConnectionPort's
// messagePolicy). Publish and Connect apply it to the Config of every
// Conn they make, so both ends enforce it: the smaller of the Config's and
// the policy's value wins.
type Policy struct {
	// InlineLimit bounds Config.InlineLimit.
	InlineLimit int
	// MaxMessageSize bounds Config.MaxMessageSize.
	MaxMessageSize int64
	// MaxSectionBytes is the most shared memory one side may have mapped
	// for a connection; 0 disables sections.
	MaxSectionBytes int64
	// MaxPendingCalls bounds Config.MaxPendingCalls.
	MaxPendingCalls int
	// MaxConnections is how many connections the server pod accepts on
	// the port at once; the broker refuses further requests.
	MaxConnections int
	// DirectAccess allows the two sides to grant each other direct access
	// to memory regions.
	DirectAccess bool
}

func policyFromWire(p ctl.Policy) Policy {
	return Policy{
		InlineLimit:     int(p.InlineLimit),
		MaxMessageSize:  int64(min(p.MaxMessageBytes, 1<<62)),
		MaxSectionBytes: int64(min(p.MaxSectionBytes, 1<<62)),
		MaxPendingCalls: int(p.MaxPendingMessages),
		MaxConnections:  int(p.MaxConnections),
		DirectAccess:    p.DirectAccess,
	}
}

// policyLimits records which of a Config's limits a brokered port's
// policy lowered (Policy.apply), so that the error for such a limit names
// the ConnectionPort field to change rather than the Config's.
type policyLimits uint8

const (
	policyMaxMessageSize policyLimits = 1 << iota
	policyMaxSectionBytes
	policyMaxPendingCalls
)

// policyFields are the ConnectionPort fields behind each policyLimits bit,
// by Config field.
var policyFields = map[string]struct {
	bit   policyLimits
	field string
}{
	"MaxMessageSize":  {policyMaxMessageSize, "messagePolicy.maxMessageBytes"},
	"MaxSectionBytes": {policyMaxSectionBytes, "messagePolicy.maxSectionBytesPerConnection"},
	"MaxPendingCalls": {policyMaxPendingCalls, "messagePolicy.maxPendingMessages"},
}

// policyField returns the ConnectionPort field that set this side's
// limit (a Config field name) to value, or "" if the limit is the
// Config's own or the peer's smaller one.
func (c *Conn) policyField(limit string, value int64) string {
	f, ok := policyFields[limit]
	if !ok || c.cfg.policyLimited&f.bit == 0 {
		return ""
	}
	own := map[string]int64{
		"MaxMessageSize":  c.cfg.MaxMessageSize,
		"MaxSectionBytes": c.cfg.MaxSectionBytes,
		"MaxPendingCalls": int64(c.cfg.MaxPendingCalls),
	}[limit]
	if value != own {
		return ""
	}
	return f.field
}

// tooLarge is the error for what (a message or loan) exceeding the
// connection's maximum message size.
func (c *Conn) tooLarge(what string) error {
	err := fmt.Errorf("%w: %s exceeds the connection's maximum message size of %d bytes", ErrTooLarge, what, c.lim.maxMessage)
	if f := c.policyField("MaxMessageSize", c.lim.maxMessage); f != "" {
		err = fmt.Errorf("%w, limited by the port's %s", err, f)
	}
	return err
}

// apply returns c restricted by the policy; zero policy fields leave c
// alone, but for MaxSectionBytes, where 0 disables sections.
func (p Policy) apply(c Config) Config {
	if p.InlineLimit > 0 && p.InlineLimit < c.InlineLimit {
		c.InlineLimit = max(p.InlineLimit, MinInlineLimit)
	}
	if p.MaxMessageSize > 0 && p.MaxMessageSize < c.MaxMessageSize {
		c.MaxMessageSize = max(p.MaxMessageSize, int64(c.InlineLimit))
		c.policyLimited |= policyMaxMessageSize
	}
	if p.MaxPendingCalls > 0 && p.MaxPendingCalls < c.MaxPendingCalls {
		c.MaxPendingCalls = p.MaxPendingCalls
		c.policyLimited |= policyMaxPendingCalls
	}
	switch {
	case p.MaxSectionBytes == 0:
		// The port allows no shared memory at all (the CRD's "0
		// disables sections").
		c.DisableSections = true
	case p.MaxSectionBytes > 0 && p.MaxSectionBytes < c.MaxSectionBytes:
		c.MaxSectionBytes = p.MaxSectionBytes
		c.policyLimited |= policyMaxSectionBytes
	}
	// The port decides whether direct access may be used at all; where it
	// may, each application still opts in with Config.AllowDirectAccess.
	if !p.DirectAccess {
		c.AllowDirectAccess = false
	}
	return c
}

var codeErrors = map[ctl.Code]error{
	ctl.CodeInvalid:         ErrInvalidPortName,
	ctl.CodePortNotFound:    ErrPortNotFound,
	ctl.CodeNotServer:       ErrNotServer,
	ctl.CodeDenied:          ErrAccessDenied,
	ctl.CodeNoServer:        ErrNoServer,
	ctl.CodeServerIdentity:  ErrServerIdentity,
	ctl.CodeUnauthenticated: ErrUnauthenticated,
	ctl.CodeLimit:           ErrLimit,
	ctl.CodeUnavailable:     ErrBrokerUnavailable,
	ctl.CodePortInUse:       ErrPortInUse,
}

// brokerError maps a broker's error message to the library's errors.
func brokerError(op, port string, m *ctl.Message) error {
	// The control protocol's decoder refuses invalid UTF-8 already; the
	// reason is a peer's text all the same, so never pass on anything else.
	reason := peertext.Clean(m.Reason)
	if m.Code == ctl.CodeRejected {
		return &RejectError{Reason: reason}
	}
	err, ok := codeErrors[m.Code]
	if !ok {
		err = ErrBrokerUnavailable
	}
	return &BrokerError{Op: op, Port: port, Err: err, Reason: reason}
}

// noSidecar explains an unset KALPC_SOCKET: the webhook sets it when it
// injects the sidecar, which pods opt into by label.
const noSidecar = EnvSocket + ` is not set: this pod has no kalpc sidecar; add the label kalpc.io/inject: "true" to the pod (its template's metadata.labels) or kalpc.io/injection: enabled to its namespace, and recreate the pod`

// checkPortName checks a port name given to Connect ("namespace/name" or
// "name") and says which rule it breaks.
func checkPortName(port string) error {
	ns, name, ok := strings.Cut(port, "/")
	if !ok {
		ns, name = "", port
	}
	if strings.Contains(name, "/") {
		return fmt.Errorf(`%q has more than one "/": want "namespace/name", or "name" for a port in the pod's own namespace`, port)
	}
	if ok {
		if err := ctl.CheckName(ns); err != nil {
			return fmt.Errorf("namespace: %w", err)
		}
	}
	if err := ctl.CheckName(name); err != nil {
		return fmt.Errorf("port name: %w", err)
	}
	return nil
}

// dialBroker connects to the control socket named by KALPC_SOCKET.
func dialBroker(ctx context.Context, op, port string) (*net.UnixConn, error) {
	path := os.Getenv(EnvSocket)
	if path == "" {
		return nil, &BrokerError{Op: op, Port: port, Err: ErrNoBroker, Reason: noSidecar}
	}
	c, err := ctl.Dial(ctx, path)
	if err != nil {
		return nil, &BrokerError{Op: op, Port: port, Err: ErrNoBroker, Reason: err.Error() +
			" (is the pod's kalpc sidecar running? kubectl logs <pod> -c kalpc-sidecar)"}
	}
	return c, nil
}

// exchange sends m on the control connection c and reads the broker's
// answer within ctx.
func exchange(ctx context.Context, c *net.UnixConn, m *ctl.Message) (*ctl.Message, *os.File, error) {
	stop := ctl.Deadline(ctx, c)
	defer stop()
	if err := ctl.Write(c, m, nil); err != nil {
		return nil, nil, ctxErr(ctx, err)
	}
	resp, f, err := ctl.Read(c)
	if err != nil {
		return nil, nil, ctxErr(ctx, err)
	}
	return resp, f, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("broker closed the control connection: %w", ErrBrokerUnavailable)
	}
	return err
}

// Connect connects, through the pod's kalpc broker, to the connection port
// port ("namespace/name", or "name" for a port in the pod's own namespace),
// sending msg as the connection message (at most MaxConnectionMessage
// bytes). The broker verifies the server's identity, the server's broker
// verifies this pod's identity and the port's client rules, and the server
// application accepts or rejects; on accept Connect returns the client's end
// of a private channel, the same Conn as Dial's, with the server's reply in
// Conn.AcceptMessage and cfg restricted by the port's Policy. A rejection is
// a *RejectError; other failures are a *BrokerError. ctx bounds the whole
// handshake. With no live server on this node the error matches
// ErrNoServer and names the nodes the port's servers run on; with
// cfg.WaitForServer, Connect waits for one until ctx ends.
func Connect(ctx context.Context, port string, msg []byte, cfg *Config) (*Conn, error) {
	if err := platformError(); err != nil {
		return nil, &BrokerError{Op: "connect", Port: port, Err: err}
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkHandshakeMessage("connection message", msg); err != nil {
		return nil, err
	}
	if err := checkPortName(port); err != nil {
		return nil, &BrokerError{Op: "connect", Port: port, Err: ErrInvalidPortName, Reason: err.Error()}
	}
	ns, name, ok := strings.Cut(port, "/")
	if !ok {
		ns, name = "", port
	}
	return untilServer(ctx, c.WaitForServer, ErrNoServer, func() (*Conn, error) {
		return connectOnce(ctx, port, ns, name, msg, &c)
	})
}

// connectOnce is one attempt of Connect.
func connectOnce(ctx context.Context, port, ns, name string, msg []byte, c *Config) (*Conn, error) {
	sc, err := dialBroker(ctx, "connect", port)
	if err != nil {
		return nil, err
	}
	defer sc.Close()
	resp, f, err := exchange(ctx, sc, &ctl.Message{Type: ctl.TypeConnect, Namespace: ns, Name: name, Payload: msg})
	if err != nil {
		return nil, &BrokerError{Op: "connect", Port: port, Err: ErrBrokerUnavailable, Reason: err.Error()}
	}
	switch resp.Type {
	case ctl.TypeError:
		return nil, brokerError("connect", port, resp)
	case ctl.TypeChannel:
		defer f.Close()
		cc := policyFromWire(resp.Policy).apply(*c)
		conn, err := FileConn(ctx, f, &cc)
		if err != nil {
			return nil, fmt.Errorf("alpc: connect %s: %w", port, err)
		}
		conn.acceptMsg = resp.Payload
		return conn, nil
	}
	return nil, fmt.Errorf("alpc: connect %s: broker answered with a %v message", port, resp.Type)
}
