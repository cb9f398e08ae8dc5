package alpcgrpc

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// ErrNoPort means no kalpc connection port listens at the address: the
// server is not on this host, or not running. Dialers return it (wrapped)
// unless they have a fallback.
var ErrNoPort = errors.New("alpcgrpc: no kalpc connection port at the address")

// Dialer connects to compatibility-mode ports (see Listener). Its
// DialContext fits grpc.WithContextDialer; the address is the port's socket
// path, as given in a "passthrough:///" or "unix:///" target.
//
// The zero Dialer is ready to use.
type Dialer struct {
	// Config configures the kalpc connection as in alpc.Dial; its Handler
	// must be nil. Nil means defaults, except that MaxPendingCalls defaults
	// to 64.
	Config *alpc.Config

	// Fallback, if not nil, is called instead of failing when no kalpc port
	// listens at the address, for example to reach the same service over
	// TCP when it is not on this node. It is also called off Linux, where
	// kalpc cannot run at all (alpc.ErrUnsupported), so the same client
	// works on a developer's macOS or Windows machine. Nil means such dials
	// fail with an error wrapping ErrNoPort (or alpc.ErrUnsupported).
	Fallback func(ctx context.Context, addr string) (net.Conn, error)

	// Broker, if true, connects through the pod's kalpc broker (the
	// sidecar at alpc.EnvSocket) with alpc.Connect: addresses are then
	// connection port names ("namespace/name", or "name" in the pod's own
	// namespace), not socket paths, and "no port" means the port has no
	// server on this node. Defaults to false.
	Broker bool
}

// DialContext connects to the port at path (a port name if Broker is set)
// and returns the connection as a net.Conn byte stream.
func (d *Dialer) DialContext(ctx context.Context, path string) (net.Conn, error) {
	c, err := streamConfig(d.Config)
	if err != nil {
		return nil, fmt.Errorf("alpcgrpc: dial %s: %w", path, err)
	}
	sc := newStreamConn("", Addr(path))
	c.Handler = alpc.HandlerFunc(sc.serveALPC)
	conn, err := connect(ctx, d.Broker, path, []byte(StreamMessage), &c)
	if err != nil {
		if d.Fallback != nil && (isNoPort(err) || isUnsupported(err)) {
			return d.Fallback(ctx, path)
		}
		if isNoPort(err) {
			return nil, &net.OpError{Op: "dial", Net: Network, Addr: Addr(path), Err: fmt.Errorf("%w: %w", ErrNoPort, err)}
		}
		return nil, &net.OpError{Op: "dial", Net: Network, Addr: Addr(path), Err: err}
	}
	sc.conn = conn
	return sc, nil
}

// DialOption returns the grpc.DialOption that makes a grpc.ClientConn dial
// through d: grpc.WithContextDialer(d.DialContext).
func (d *Dialer) DialOption() grpc.DialOption {
	return grpc.WithContextDialer(d.DialContext)
}

// isNoPort reports whether a dial failed because nothing listens at the
// path, or a brokered port has no server on this node.
func isNoPort(err error) bool {
	return errors.Is(err, alpc.ErrNoPort) || errors.Is(err, alpc.ErrNoServer)
}

// isUnsupported reports whether a dial failed because kalpc cannot run on
// this platform (off Linux). A fallback applies then as for a missing port.
func isUnsupported(err error) bool {
	return alpc.Supported() != nil && errors.Is(err, alpc.ErrUnsupported)
}

// connect makes a client's kalpc connection: through the broker to the
// port named target, or to the socket at path target.
func connect(ctx context.Context, broker bool, target string, msg []byte, cfg *alpc.Config) (*alpc.Conn, error) {
	if broker {
		return alpc.Connect(ctx, target, msg, cfg)
	}
	return alpc.Dial(ctx, target, msg, cfg)
}
