package alpcgrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// Connection messages. A client names the mode it speaks in its kalpc
// connection message; a server accepts only its own mode and rejects the
// other with a reason that says what to do.
const (
	// StreamMessage is the connection message of compatibility-mode
	// connections (HTTP/2 over a byte stream).
	StreamMessage = "kalpc-grpc-stream/1"
	// NativeMessage is the connection message of native-mode connections.
	NativeMessage = "kalpc-grpc-native/1"
)

// Listener is a net.Listener over a kalpc connection port: every accepted
// kalpc connection becomes a net.Conn byte stream, so an unmodified
// grpc.Server can Serve it (compatibility mode).
type Listener struct {
	a    alpc.Acceptor
	addr Addr

	mu      sync.Mutex
	changed chan struct{}
	conns   map[*alpc.Conn]*streamConn
}

var _ net.Listener = (*Listener)(nil)

// Listen publishes a kalpc connection port at path for compatibility-mode
// clients (see Dialer). cfg configures the port and its connections as in
// alpc.Listen; its Handler must be nil, as the Listener serves the
// connections itself. A nil cfg means defaults, except that MaxPendingCalls
// defaults to 64, which bounds each connection's queued bytes to about
// 4 MiB.
func Listen(path string, cfg *alpc.Config) (*Listener, error) {
	c, err := streamConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("alpcgrpc: listen %s: %w", path, err)
	}
	ln := newListener(Addr(path))
	c.Handler = alpc.HandlerFunc(ln.serveALPC)
	l, err := alpc.Listen(path, &c)
	if err != nil {
		return nil, fmt.Errorf("alpcgrpc: %w", err)
	}
	ln.a = l
	return ln, nil
}

// Publish publishes the connection port name in the pod's namespace
// through the pod's kalpc broker (the sidecar at alpc.EnvSocket), for
// compatibility-mode clients: the brokered counterpart of Listen. The port
// must be declared (a ConnectionPort) and this pod allowed to serve it;
// see alpc.Publish. cfg is as in Listen. ctx bounds only the publication.
func Publish(ctx context.Context, name string, cfg *alpc.Config) (*Listener, error) {
	c, err := streamConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("alpcgrpc: publish %s: %w", name, err)
	}
	ln := newListener(Addr(name))
	c.Handler = alpc.HandlerFunc(ln.serveALPC)
	p, err := alpc.Publish(ctx, name, &c)
	if err != nil {
		return nil, fmt.Errorf("alpcgrpc: %w", err)
	}
	ln.a = p
	return ln, nil
}

func newListener(addr Addr) *Listener {
	return &Listener{addr: addr, changed: make(chan struct{}), conns: make(map[*alpc.Conn]*streamConn)}
}

func streamConfig(cfg *alpc.Config) (alpc.Config, error) {
	var c alpc.Config
	if cfg != nil {
		c = *cfg
	}
	if c.Handler != nil {
		return c, errors.New("alpc.Config.Handler must be nil: the connection is served by alpcgrpc")
	}
	if c.MaxPendingCalls == 0 {
		c.MaxPendingCalls = compatMaxPendingCalls
	}
	return c, nil
}

// Accept waits for the next compatibility-mode client and returns its
// connection. Clients that ask for another mode are rejected with a reason.
// After Close it returns an error wrapping net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		req, err := l.a.Accept(context.Background())
		if err != nil {
			return nil, &net.OpError{Op: "accept", Net: Network, Addr: l.addr, Err: err}
		}
		if msg := string(req.Message); msg != StreamMessage {
			_ = req.Reject(rejectReason(msg, StreamMessage))
			continue
		}
		sc := newStreamConn(l.addr, requestPeer(req.Peer))
		conn, err := req.Accept(nil)
		if err != nil {
			// The client gave up during the handshake; wait for the next.
			continue
		}
		sc.conn = conn
		l.mu.Lock()
		l.conns[conn] = sc
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
		go func() {
			<-conn.Done()
			l.mu.Lock()
			delete(l.conns, conn)
			l.mu.Unlock()
		}()
		return sc, nil
	}
}

// serveALPC routes a request to its connection. A request can arrive just
// before Accept has recorded its connection: it waits for that.
func (l *Listener) serveALPC(ctx context.Context, req *alpc.Request) ([]byte, error) {
	l.mu.Lock()
	for {
		if sc, ok := l.conns[req.Conn()]; ok {
			l.mu.Unlock()
			return sc.serveALPC(ctx, req)
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		l.mu.Lock()
	}
}

// Close unpublishes the port. Connections already accepted stay open.
func (l *Listener) Close() error {
	if err := l.a.Close(); err != nil {
		return &net.OpError{Op: "close", Net: Network, Addr: l.addr, Err: err}
	}
	return nil
}

// Addr returns the port's address.
func (l *Listener) Addr() net.Addr { return l.addr }

func rejectReason(got, want string) string {
	switch got {
	case NativeMessage:
		return "this kalpc port serves gRPC in compatibility mode (HTTP/2); dial it with alpcgrpc.Dialer, not alpcgrpc.NewClient"
	case StreamMessage:
		return "this kalpc port serves native gRPC; dial it with alpcgrpc.NewClient, not alpcgrpc.Dialer"
	}
	return fmt.Sprintf("this kalpc port serves gRPC; the connection message must be %q", want)
}
