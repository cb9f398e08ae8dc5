package sidecar

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/internal/peertext"
	"github.com/kalpc/kalpc/internal/sidecar/connections"
	"github.com/kalpc/kalpc/internal/sidecar/identity"
	"github.com/kalpc/kalpc/internal/sidecar/metrics"
	"github.com/kalpc/kalpc/internal/sidecar/nodedir"
	"github.com/kalpc/kalpc/internal/sidecar/policy"
	"github.com/kalpc/kalpc/pkg/alpc"
)

// publication is a port the pod's application publishes: its endpoint in
// the node directory and the application's control connection.
type publication struct {
	s        *Sidecar
	name     string
	key      string // namespace/name, the metrics label
	app      *net.UnixConn
	endpoint *nodedir.Listener

	writeMu sync.Mutex

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *ctl.Message // requests delivered, awaiting the app's answer
	active  map[uint64]uint64            // channels handed over, not reported closed: request id → connections registry id
	closed  bool

	live atomic.Bool // the application was told it is published (see Sidecar.Published)
}

// publish serves an application's Publish request for the connection's
// lifetime.
func (s *Sidecar) publish(c *net.UnixConn, name string) {
	ns := s.opts.Pod.Namespace
	pub, err := s.startPublication(c, name)
	if err != nil {
		s.log.Info("publish refused", "port", ns+"/"+name, "error", err)
		s.replyError(c, codeOf(err), reasonOf(err))
		return
	}
	pub.live.Store(true)
	s.log.Info("port published", "port", pub.key, "endpoint", pub.endpoint.Path())
	s.metrics.PublishedPorts.Inc()
	s.wg.Add(1)
	go pub.acceptPeers()
	pub.readApp()
	pub.close()
	s.metrics.PublishedPorts.Dec()
	s.log.Info("port unpublished", "port", pub.key)
}

func (s *Sidecar) startPublication(c *net.UnixConn, name string) (*publication, error) {
	ns := s.opts.Pod.Namespace
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.HandshakeTimeout)
	defer cancel()
	port, err := s.engine.Port(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	pod, err := s.engine.Pod(ctx, s.self())
	if err != nil {
		return nil, refuse(ctl.CodeUnavailable, "cannot read this pod: %w", err)
	}
	if err := policy.MayServe(port, pod); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if _, dup := s.pubs[name]; dup {
		s.mu.Unlock()
		return nil, refuse(ctl.CodePortInUse, "this pod already publishes port %s/%s", ns, name)
	}
	pub := &publication{s: s, name: name, key: ns + "/" + name, app: c,
		pending: make(map[uint64]chan *ctl.Message), active: make(map[uint64]uint64)}
	s.pubs[name] = pub
	s.mu.Unlock()
	ep, err := nodedir.Listen(s.dir.EndpointPath(ns, name, s.opts.Pod.UID))
	if err == nil {
		pub.endpoint = ep
		err = pub.write(&ctl.Message{Type: ctl.TypePublished, Policy: policy.MessagePolicy(port)}, nil)
	}
	if err != nil {
		if ep != nil {
			_ = ep.Close()
		}
		s.mu.Lock()
		delete(s.pubs, name)
		s.mu.Unlock()
		if errors.Is(err, nodedir.ErrInUse) {
			return nil, refuse(ctl.CodePortInUse, "another process holds this pod's endpoint of %s/%s", ns, name)
		}
		return nil, refuse(ctl.CodeUnavailable, "cannot create the endpoint: %w", err)
	}
	return pub, nil
}

// self is this sidecar's own pod as an identity.
func (s *Sidecar) self() identity.Identity {
	return identity.Identity{Namespace: s.opts.Pod.Namespace, PodName: s.opts.Pod.Name, PodUID: s.opts.Pod.UID,
		ServiceAccount: s.opts.Pod.ServiceAccount, NodeName: s.opts.Pod.NodeName}
}

func (p *publication) write(m *ctl.Message, f *os.File) error {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	_ = p.app.SetWriteDeadline(time.Now().Add(p.s.opts.HandshakeTimeout))
	defer func() { _ = p.app.SetWriteDeadline(noDeadline) }()
	return ctl.Write(p.app, m, f)
}

// readApp handles the application's answers until it closes the control
// connection (or the sidecar shuts down).
func (p *publication) readApp() {
	for {
		m, f, err := ctl.Read(p.app)
		if f != nil {
			_ = f.Close()
		}
		if err != nil {
			if errors.Is(err, ctl.ErrMalformed) {
				p.s.log.Warn("malformed message from the server application; unpublishing", "port", p.key, "error", err)
			}
			return
		}
		switch m.Type {
		case ctl.TypeAccept, ctl.TypeReject:
			p.mu.Lock()
			ch := p.pending[m.ID]
			delete(p.pending, m.ID)
			p.mu.Unlock()
			if ch == nil {
				if m.Type == ctl.TypeAccept {
					_ = p.write(&ctl.Message{Type: ctl.TypeError, ID: m.ID, Code: ctl.CodeUnavailable,
						Reason: "the connection request expired or its client went away"}, nil)
				}
				continue
			}
			ch <- m
		case ctl.TypeClosed:
			p.mu.Lock()
			cid, ok := p.active[m.ID]
			delete(p.active, m.ID)
			p.mu.Unlock()
			if ok {
				p.s.conns.Remove(cid)
				p.s.metrics.ActiveChannels.WithLabelValues(p.key).Dec()
			}
		default:
			p.s.log.Warn("unexpected message from the server application; unpublishing", "port", p.key, "type", m.Type)
			return
		}
	}
}

// close unpublishes: removes the endpoint, refuses pending requests.
func (p *publication) close() {
	p.s.mu.Lock()
	if p.s.pubs[p.name] == p {
		delete(p.s.pubs, p.name)
	}
	p.s.mu.Unlock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	pending := p.pending
	p.pending = map[uint64]chan *ctl.Message{}
	active := p.active
	p.active = map[uint64]uint64{}
	p.mu.Unlock()
	_ = p.endpoint.Close()
	_ = p.app.Close()
	for _, ch := range pending {
		close(ch)
	}
	// The channels may live on, but with the publication gone nothing
	// reports their end any more: stop listing them.
	for _, cid := range active {
		p.s.conns.Remove(cid)
	}
	p.s.metrics.ActiveChannels.WithLabelValues(p.key).Sub(float64(len(active)))
}

func (p *publication) acceptPeers() {
	defer p.s.wg.Done()
	for {
		c, err := p.endpoint.Accept()
		if err != nil {
			return
		}
		select {
		case p.s.peerSlots <- struct{}{}:
		default:
			p.s.refuseConn(c, metrics.ListenerEndpoint, p.s.opts.MaxPeerConnections)
			continue
		}
		p.s.wg.Add(1)
		go func() {
			defer p.s.wg.Done()
			defer func() { <-p.s.peerSlots }()
			defer c.Close()
			p.servePeer(c)
		}()
	}
}

// servePeer runs the server side of one connection request from a client
// sidecar.
func (p *publication) servePeer(c *net.UnixConn) {
	s := p.s
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.ctx, 2*s.opts.HandshakeTimeout)
	defer cancel()
	stop := ctl.Deadline(ctx, c)
	defer stop()
	client, err := p.broker(ctx, c)
	result := metrics.ResultAccepted
	if err != nil {
		code := codeOf(err)
		result = resultOf(code)
		if code != ctl.CodeRejected {
			s.log.Info("connection refused", "port", p.key, "client", client.String(), "code", code.String(), "error", err)
		}
		_ = ctl.Write(c, &ctl.Message{Type: ctl.TypePeerRefused, Code: code, Reason: peertext.Truncate(reasonOf(err), ctl.MaxErrorMessage)}, nil)
		// A token that failed verification may name someone else's
		// ServiceAccount (a replayed token): only a verified one counts.
		sa := metrics.Unverified
		if client.ServiceAccount != "" && result != metrics.ResultUnauthenticated && client.Namespace != "" {
			sa = client.Namespace + "/" + client.ServiceAccount
		}
		s.metrics.Refusals.WithLabelValues(p.key, sa, result).Inc()
	} else {
		s.log.Debug("connection brokered", "port", p.key, "client", client.String())
	}
	s.metrics.Connections.WithLabelValues(p.key, metrics.RoleServer, result).Inc()
	s.metrics.ConnectDuration.WithLabelValues(metrics.RoleServer, result).Observe(time.Since(start).Seconds())
}

func (p *publication) broker(ctx context.Context, c *net.UnixConn) (identity.Identity, error) {
	s := p.s
	var client identity.Identity
	token, err := s.token.Token()
	if err != nil {
		return client, refuse(ctl.CodeUnavailable, "server sidecar cannot read its token: %w", err)
	}
	if err := ctl.Write(c, &ctl.Message{Type: ctl.TypePeerHello, Token: token}, nil); err != nil {
		return client, err
	}
	// The client's first message comes once its sidecar has verified
	// ours: at most HandshakeTimeout, not the whole brokering budget, for
	// a connection that holds one of the endpoints' slots.
	first := time.Now().Add(s.opts.HandshakeTimeout)
	dl, _ := ctx.Deadline()
	_ = c.SetReadDeadline(minTime(first, dl))
	m, f, err := ctl.Read(c)
	_ = c.SetReadDeadline(dl)
	if f != nil {
		_ = f.Close()
	}
	if err != nil {
		return client, err
	}
	if m.Type != ctl.TypePeerConnect {
		return client, refuse(ctl.CodeInvalid, "expected a peer-connect message, got %v", m.Type)
	}
	if m.Namespace != s.opts.Pod.Namespace || m.Name != p.name {
		return client, refuse(ctl.CodeInvalid, "this endpoint serves %s, not %s/%s", p.key, m.Namespace, m.Name)
	}
	client, err = s.verifyPeer(ctx, c, m.Token)
	if err != nil {
		return client, err
	}
	port, err := s.engine.Port(ctx, s.opts.Pod.Namespace, p.name)
	if err != nil {
		return client, err
	}
	pod, err := s.engine.Pod(ctx, s.self())
	if err != nil {
		return client, refuse(ctl.CodeUnavailable, "cannot read the server pod: %w", err)
	}
	if err := policy.MayServe(port, pod); err != nil {
		return client, err
	}
	if err := s.engine.Authorize(ctx, port, client); err != nil {
		return client, err
	}
	pol := policy.MessagePolicy(port)

	// Deliver to the application.
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return client, refuse(ctl.CodeNoServer, "port %s is being unpublished", p.key)
	}
	if len(p.active) >= int(pol.MaxConnections) {
		p.mu.Unlock()
		return client, refuse(ctl.CodeLimit, "server pod %s has %d connections on %s (messagePolicy.maxConnections)", s.opts.Pod.Name, pol.MaxConnections, p.key)
	}
	p.nextID++
	id := p.nextID
	ch := make(chan *ctl.Message, 1)
	p.pending[id] = ch
	p.mu.Unlock()
	forget := func() {
		p.mu.Lock()
		delete(p.pending, id)
		p.mu.Unlock()
	}
	peer := ctl.Identity{Namespace: client.Namespace, ServiceAccount: client.ServiceAccount, PodName: client.PodName, PodUID: client.PodUID}
	if err := p.write(&ctl.Message{Type: ctl.TypeIncoming, ID: id, Peer: peer, Payload: m.Payload}, nil); err != nil {
		// The application no longer takes requests (typically: it is
		// exiting, and this sidecar has not yet read the end of its
		// control connection). The publication is dead: unpublish at once
		// so that no other client draws it, and say "no server" so that
		// the client's sidecar tries the port's other servers.
		forget()
		p.close()
		return client, refuse(ctl.CodeNoServer, "the server application of %s went away: %w", p.key, err)
	}
	answerCtx, cancel := context.WithTimeout(ctx, s.opts.HandshakeTimeout)
	defer cancel()
	var ans *ctl.Message
	select {
	case ans = <-ch:
		if ans == nil {
			return client, refuse(ctl.CodeNoServer, "port %s was unpublished", p.key)
		}
	case <-answerCtx.Done():
		forget()
		return client, refuse(ctl.CodeUnavailable, "the server application did not answer within %v", s.opts.HandshakeTimeout)
	}
	if ans.Type == ctl.TypeReject {
		return client, refuse(ctl.CodeRejected, "%s", ans.Reason)
	}

	// Accepted: a fresh channel, one end to each side.
	srvEnd, cliEnd, err := alpc.SocketPair()
	if err != nil {
		_ = p.write(&ctl.Message{Type: ctl.TypeError, ID: id, Code: ctl.CodeUnavailable, Reason: err.Error()}, nil)
		return client, refuse(ctl.CodeUnavailable, "cannot create the channel: %w", err)
	}
	defer srvEnd.Close()
	defer cliEnd.Close()
	if err := ctl.Write(c, &ctl.Message{Type: ctl.TypePeerAccepted, Policy: pol, Payload: ans.Payload}, cliEnd); err != nil {
		_ = p.write(&ctl.Message{Type: ctl.TypeError, ID: id, Code: ctl.CodeUnavailable, Reason: "the client went away before the channel was handed over"}, nil)
		return client, err
	}
	cid := s.conns.Add(connections.Connection{
		Port: p.key,
		Client: connections.Pod{Namespace: client.Namespace, Name: client.PodName, UID: client.PodUID,
			ServiceAccount: client.ServiceAccount},
		Server: s.selfPod(),
		Node:   s.opts.Pod.NodeName,
		Since:  time.Now(),
	})
	p.mu.Lock()
	if p.closed {
		// Unpublished while handing over: close() already ran and will
		// not see this channel.
		p.mu.Unlock()
		s.conns.Remove(cid)
		return client, nil
	}
	p.active[id] = cid
	p.mu.Unlock()
	s.metrics.ActiveChannels.WithLabelValues(p.key).Inc()
	if err := p.write(&ctl.Message{Type: ctl.TypeChannel, ID: id, Policy: pol, Peer: peer}, srvEnd); err != nil {
		s.log.Warn("cannot hand the channel to the server application", "port", p.key, "error", err)
		// The application never got its end, so it will never report it
		// closed; the client sees the channel end when srvEnd is closed.
		p.mu.Lock()
		_, ok := p.active[id]
		delete(p.active, id)
		p.mu.Unlock()
		if ok {
			s.conns.Remove(cid)
			s.metrics.ActiveChannels.WithLabelValues(p.key).Dec()
		}
	}
	return client, nil
}

// verifyPeer verifies a peer sidecar's token and binds it to the process
// at the other end of c: the process holding the identity socket of the
// token's pod on this node.
func (s *Sidecar) verifyPeer(ctx context.Context, c *net.UnixConn, token string) (identity.Identity, error) {
	var id identity.Identity
	err := s.retryForbidden(ctx, func() error {
		var err error
		id, err = s.verifier.Verify(ctx, token)
		return err
	})
	switch {
	case err == nil:
		s.metrics.TokenReviews.WithLabelValues("valid").Inc()
	case errors.Is(err, identity.ErrUnauthenticated):
		s.metrics.TokenReviews.WithLabelValues("invalid").Inc()
		return id, err
	default:
		s.metrics.TokenReviews.WithLabelValues("error").Inc()
		return id, refuse(ctl.CodeUnavailable, "cannot verify the peer's token: %w", err)
	}
	got, err := nodedir.PeerProcess(c)
	if err != nil {
		return id, refuse(ctl.CodeUnavailable, "cannot identify the peer process: %w", err)
	}
	want, err := s.dir.IdentityProcess(ctx, id.PodUID)
	if err != nil {
		return id, refuse(ctl.CodeUnauthenticated, "token of %s presented, but that pod has no live sidecar on this node: %w", id, err)
	}
	if got != want {
		return id, refuse(ctl.CodeUnauthenticated, "token of %s presented by a process that is not that pod's sidecar (replayed token?)", id)
	}
	return id, nil
}
