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
	"github.com/kalpc/kalpc/internal/podid"
	"github.com/kalpc/kalpc/internal/sidecar/connections"
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
	pod, err := s.engine.Pod(ctx, s.opts.Pod)
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
	ep, err := nodedir.Listen(s.dir.EndpointPath(ns, name, s.opts.Pod.PodUID))
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

func (p *publication) write(m *ctl.Message, f *os.File) error {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	_ = p.app.SetWriteDeadline(time.Now().Add(p.s.opts.HandshakeTimeout))
	defer func() { _ = p.app.SetWriteDeadline(time.Time{}) }()
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
					_ = p.write(refusalMessage(ctl.TypeError, m.ID, ctl.CodeUnavailable,
						"the connection request expired or its client went away"), nil)
				}
				continue
			}
			ch <- m
		case ctl.TypeClosed:
			p.unregister(m.ID)
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
		_ = ctl.Write(c, refusalMessage(ctl.TypePeerRefused, 0, code, reasonOf(err)), nil)
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

// broker runs the server side of brokering one connection, in steps:
// greet the client sidecar and read its request, verify the client,
// authorize it, deliver the request to the server application and await
// its answer, and on accept hand a new channel's ends over. Once the
// client is verified its identity is returned, with an error too.
func (p *publication) broker(ctx context.Context, c *net.UnixConn) (podid.Identity, error) {
	req, err := p.greet(ctx, c)
	if err != nil {
		return podid.Identity{}, err
	}
	client, err := p.verifyClient(ctx, c, req)
	if err != nil {
		return client, err
	}
	pol, err := p.authorize(ctx, client)
	if err != nil {
		return client, err
	}
	id, answer, err := p.deliver(client, req.Payload, pol)
	if err != nil {
		return client, err
	}
	ans, err := p.await(ctx, id, answer)
	if err != nil {
		return client, err
	}
	return client, p.handOver(c, id, client, pol, ans.Payload)
}

// greet presents this pod's token to the client sidecar and reads its
// peer-connect request, which that sidecar sends once it has verified
// this one.
func (p *publication) greet(ctx context.Context, c *net.UnixConn) (*ctl.Message, error) {
	s := p.s
	token, err := s.token.Token()
	if err != nil {
		return nil, refuse(ctl.CodeUnavailable, "server sidecar cannot read its token: %w", err)
	}
	if err := ctl.Write(c, &ctl.Message{Type: ctl.TypePeerHello, Token: token}, nil); err != nil {
		return nil, err
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
		return nil, err
	}
	if m.Type != ctl.TypePeerConnect {
		return nil, refuse(ctl.CodeInvalid, "expected a peer-connect message, got %v", m.Type)
	}
	return m, nil
}

// minTime returns the earlier of a and b, a zero time counting as none.
func minTime(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// verifyClient checks that req asks for this endpoint's port and verifies
// the client sidecar that sent it.
func (p *publication) verifyClient(ctx context.Context, c *net.UnixConn, req *ctl.Message) (podid.Identity, error) {
	if req.Namespace != p.s.opts.Pod.Namespace || req.Name != p.name {
		return podid.Identity{}, refuse(ctl.CodeInvalid, "this endpoint serves %s, not %s/%s", p.key, req.Namespace, req.Name)
	}
	return p.s.verifyPeer(ctx, c, req.Token)
}

// authorize checks, against the ConnectionPort as it is now, that this
// pod may still serve it and that client may connect, and returns the
// port's message policy.
func (p *publication) authorize(ctx context.Context, client podid.Identity) (ctl.Policy, error) {
	s := p.s
	port, err := s.engine.Port(ctx, s.opts.Pod.Namespace, p.name)
	if err != nil {
		return ctl.Policy{}, err
	}
	pod, err := s.engine.Pod(ctx, s.opts.Pod)
	if err != nil {
		return ctl.Policy{}, refuse(ctl.CodeUnavailable, "cannot read the server pod: %w", err)
	}
	if err := policy.MayServe(port, pod); err != nil {
		return ctl.Policy{}, err
	}
	if err := s.engine.Authorize(ctx, port, client); err != nil {
		return ctl.Policy{}, err
	}
	return policy.MessagePolicy(port), nil
}

// deliver hands the connection request to the server application, within
// the port's connection limit. It returns the request's id and where its
// answer arrives (closed if the port is unpublished first).
func (p *publication) deliver(client podid.Identity, payload []byte, pol ctl.Policy) (uint64, <-chan *ctl.Message, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, nil, refuse(ctl.CodeNoServer, "port %s is being unpublished", p.key)
	}
	if len(p.active) >= int(pol.MaxConnections) {
		p.mu.Unlock()
		return 0, nil, refuse(ctl.CodeLimit, "server pod %s has %d connections on %s (messagePolicy.maxConnections)", p.s.opts.Pod.PodName, pol.MaxConnections, p.key)
	}
	p.nextID++
	id := p.nextID
	answer := make(chan *ctl.Message, 1)
	p.pending[id] = answer
	p.mu.Unlock()
	if err := p.write(&ctl.Message{Type: ctl.TypeIncoming, ID: id, Peer: client, Payload: payload}, nil); err != nil {
		// The application no longer takes requests (typically: it is
		// exiting, and this sidecar has not yet read the end of its
		// control connection). The publication is dead: unpublish at once
		// so that no other client draws it, and say "no server" so that
		// the client's sidecar tries the port's other servers.
		p.forget(id)
		p.close()
		return 0, nil, refuse(ctl.CodeNoServer, "the server application of %s went away: %w", p.key, err)
	}
	return id, answer, nil
}

// forget drops a delivered request that will not be answered.
func (p *publication) forget(id uint64) {
	p.mu.Lock()
	delete(p.pending, id)
	p.mu.Unlock()
}

// await waits, at most HandshakeTimeout, for the server application's
// answer to request id. A rejection is a refusal with the application's
// reason.
func (p *publication) await(ctx context.Context, id uint64, answer <-chan *ctl.Message) (*ctl.Message, error) {
	timeout := p.s.opts.HandshakeTimeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case ans := <-answer:
		if ans == nil {
			return nil, refuse(ctl.CodeNoServer, "port %s was unpublished", p.key)
		}
		if ans.Type == ctl.TypeReject {
			return nil, refuse(ctl.CodeRejected, "%s", ans.Reason)
		}
		return ans, nil
	case <-ctx.Done():
		p.forget(id)
		return nil, refuse(ctl.CodeUnavailable, "the server application did not answer within %v", timeout)
	}
}

// handOver creates the channel of accepted request id and hands its ends
// over: one to the client sidecar, then, once that has it, the other to
// the server application, registering the connection in between.
func (p *publication) handOver(c *net.UnixConn, id uint64, client podid.Identity, pol ctl.Policy, payload []byte) error {
	srvEnd, cliEnd, err := alpc.SocketPair()
	if err != nil {
		_ = p.write(refusalMessage(ctl.TypeError, id, ctl.CodeUnavailable, err.Error()), nil)
		return refuse(ctl.CodeUnavailable, "cannot create the channel: %w", err)
	}
	defer srvEnd.Close()
	defer cliEnd.Close()
	if err := ctl.Write(c, &ctl.Message{Type: ctl.TypePeerAccepted, Policy: pol, Payload: payload}, cliEnd); err != nil {
		_ = p.write(refusalMessage(ctl.TypeError, id, ctl.CodeUnavailable, "the client went away before the channel was handed over"), nil)
		return err
	}
	if !p.register(id, client) {
		return nil
	}
	if err := p.write(&ctl.Message{Type: ctl.TypeChannel, ID: id, Policy: pol, Peer: client}, srvEnd); err != nil {
		p.s.log.Warn("cannot hand the channel to the server application", "port", p.key, "error", err)
		// The application never got its end, so it will never report it
		// closed; the client sees the channel end when srvEnd is closed.
		p.unregister(id)
	}
	return nil
}

// register lists the channel of request id as open, in the connections
// list and the active-channels metric, unless the port was unpublished
// while it was handed over (close has run and would not see it); it
// reports whether it did.
func (p *publication) register(id uint64, client podid.Identity) bool {
	s := p.s
	cid := s.conns.Add(connections.Connection{
		Port:   p.key,
		Client: connections.PodOf(client),
		Server: connections.PodOf(s.opts.Pod),
		Node:   s.opts.NodeName,
		Since:  time.Now(),
	})
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		s.conns.Remove(cid)
		return false
	}
	p.active[id] = cid
	p.mu.Unlock()
	s.metrics.ActiveChannels.WithLabelValues(p.key).Inc()
	return true
}

// unregister drops the channel of request id from the open ones, if it is
// listed: the server application reported it closed, or never got its end.
func (p *publication) unregister(id uint64) {
	p.mu.Lock()
	cid, ok := p.active[id]
	delete(p.active, id)
	p.mu.Unlock()
	if ok {
		p.s.conns.Remove(cid)
		p.s.metrics.ActiveChannels.WithLabelValues(p.key).Dec()
	}
}
