package alpcgrpc

import (
	"context"
	"fmt"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// In Kubernetes, a pod with the kalpc sidecar has no socket path to listen
// on or dial: its sidecar brokers connections (alpc.Publish and
// alpc.Connect). Publish, Server.Publish with Server.ServePort,
// Dialer.Broker and WithBroker are the brokered counterparts of Listen,
// Server.Listen with Server.Serve, and path dialing.

// port is where connection requests come from: a socket path
// (*alpc.Listener) or a port published through the broker (*alpc.Port).
type port interface {
	accept(ctx context.Context) (*connRequest, error)
	Close() error
}

// connRequest is a connection request from either kind of port.
type connRequest struct {
	message []byte
	peer    Addr
	accept  func(reply []byte) (*alpc.Conn, error)
	reject  func(reason string) error
}

type pathPort struct{ *alpc.Listener }

func (p pathPort) accept(ctx context.Context) (*connRequest, error) {
	req, err := p.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return &connRequest{message: req.Message, peer: peerAddr(req.Credentials), accept: req.Accept, reject: req.Reject}, nil
}

type brokeredPort struct{ *alpc.Port }

func (p brokeredPort) accept(ctx context.Context) (*connRequest, error) {
	req, err := p.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return &connRequest{message: req.Message, peer: identityAddr(req.Peer), accept: req.Accept, reject: req.Reject}, nil
}

// identityAddr is a brokered peer's address: its verified pod identity.
func identityAddr(id alpc.Identity) Addr {
	return Addr(fmt.Sprintf("pod:%s/%s", id.Namespace, id.PodName))
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
	ln.p = brokeredPort{p}
	return ln, nil
}

// Publish publishes the connection port name in the pod's namespace
// through the pod's kalpc broker, whose connections this server serves;
// pass it to ServePort. It is the brokered counterpart of Listen; cfg is
// as there. ctx bounds only the publication.
func (s *Server) Publish(ctx context.Context, name string, cfg *alpc.Config) (*alpc.Port, error) {
	c, err := s.config(cfg)
	if err != nil {
		return nil, fmt.Errorf("alpcgrpc: publish %s: %w", name, err)
	}
	p, err := alpc.Publish(ctx, name, &c)
	if err != nil {
		return nil, fmt.Errorf("alpcgrpc: %w", err)
	}
	return p, nil
}

// ServePort is Serve for a port published through the broker (see
// Publish): it accepts native-mode clients on p until p is closed or the
// server stops.
func (s *Server) ServePort(p *alpc.Port) error {
	return s.serve(brokeredPort{p})
}

// connect makes a client's kalpc connection: through the broker to the
// port named target, or to the socket at path target.
func connect(ctx context.Context, broker bool, target string, msg []byte, cfg *alpc.Config) (*alpc.Conn, error) {
	if broker {
		return alpc.Connect(ctx, target, msg, cfg)
	}
	return alpc.Dial(ctx, target, msg, cfg)
}
