package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/internal/podid"
	"github.com/kalpc/kalpc/internal/sidecar/metrics"
	"github.com/kalpc/kalpc/internal/sidecar/nodedir"
)

// connect serves an application's Connect request: the client side of
// brokering.
func (s *Sidecar) connect(c *net.UnixConn, m *ctl.Message) {
	start := time.Now()
	ns := m.Namespace
	if ns == "" {
		ns = s.opts.Pod.Namespace
	}
	key := ns + "/" + m.Name
	// Each server endpoint tried may take two handshake steps.
	ctx, cancel := context.WithTimeout(s.ctx, 3*s.opts.HandshakeTimeout)
	defer cancel()
	stop := ctl.Deadline(ctx, c)
	defer stop()
	server, err := s.connectVia(ctx, c, ns, m.Name, m.Payload)
	result := metrics.ResultAccepted
	if err != nil {
		code := codeOf(err)
		result = resultOf(code)
		if code != ctl.CodeRejected {
			s.log.Info("connect failed", "port", key, "code", code.String(), "error", err)
		}
		s.replyError(c, code, reasonOf(err))
	} else {
		s.log.Debug("connected", "port", key, "server", server.String())
	}
	s.metrics.Connections.WithLabelValues(key, metrics.RoleClient, result).Inc()
	s.metrics.ConnectDuration.WithLabelValues(metrics.RoleClient, result).Observe(time.Since(start).Seconds())
}

// connectVia tries the port's endpoints on this node in round-robin order,
// skipping dead ones and ones that fail identity verification, and hands the
// application its end of the channel.
func (s *Sidecar) connectVia(ctx context.Context, app *net.UnixConn, ns, name string, msg []byte) (podid.Identity, error) {
	port, err := s.engine.Port(ctx, ns, name)
	if err != nil {
		return podid.Identity{}, err
	}
	uids, err := s.dir.Endpoints(ns, name)
	if err != nil {
		return podid.Identity{}, refuse(ctl.CodeUnavailable, "cannot list the endpoints of %s/%s: %w", ns, name, err)
	}
	key := ns + "/" + name
	s.mu.Lock()
	first := s.rr[key]
	s.rr[key]++
	s.mu.Unlock()
	var identityErrs, reasons, busy []error
	silent := 0
	var unverifiable *unverifiableError
	for i := range uids {
		uid := uids[(int(first)+i)%len(uids)]
		path := s.dir.EndpointPath(ns, name, uid)
		pc, err := nodedir.Dial(ctx, path)
		if err != nil {
			if removed, _ := nodedir.CleanStale(path); removed {
				s.metrics.StaleEntries.Inc()
				s.log.Info("removed the endpoint of a dead server", "port", key, "podUID", uid)
			}
			continue
		}
		server, resp, f, err := s.tryServer(ctx, pc, port, uid, msg)
		_ = pc.Close()
		switch {
		case errors.As(err, &unverifiable):
			s.log.Info("cannot verify a server endpoint's identity now", "port", key, "podUID", uid, "error", err)
			reasons = append(reasons, unverifiable.err)
			continue
		case errors.Is(err, errServerIdentity):
			s.log.Warn("refusing a server endpoint that failed identity verification", "port", key, "podUID", uid, "error", err)
			identityErrs = append(identityErrs, err)
			continue
		case errors.Is(err, errEndpointGone):
			continue
		case errors.Is(err, errEndpointBusy):
			s.log.Info("server endpoint busy; trying the next", "port", key, "podUID", uid, "error", err)
			busy = append(busy, err)
			continue
		case errors.Is(err, errEndpointSilent):
			s.log.Warn("skipping a server endpoint that did not answer", "port", key, "podUID", uid, "error", err)
			s.metrics.SilentEndpoints.Inc()
			silent++
			continue
		case codeOf(err) == ctl.CodeNoServer:
			// That server is being unpublished or its application went
			// away (a rolling update): another server may take us.
			s.log.Debug("server endpoint going away; trying the next", "port", key, "podUID", uid, "error", err)
			continue
		case err != nil:
			return server, err
		}
		err = ctl.Write(app, &ctl.Message{Type: ctl.TypeChannel, Policy: resp.Policy, Peer: server, Payload: resp.Payload}, f)
		_ = f.Close()
		if err != nil {
			return server, fmt.Errorf("cannot hand the channel to the application: %w", err)
		}
		return server, nil
	}
	if len(identityErrs) > 0 {
		return podid.Identity{}, refuse(ctl.CodeServerIdentity, "no server endpoint of %s on this node passed identity verification: %w", key, errors.Join(identityErrs...))
	}
	if len(busy) > 0 {
		return podid.Identity{}, refuse(ctl.CodeLimit, "every server endpoint of %s that answered is busy: %w", key, errors.Join(busy...))
	}
	if len(reasons) > 0 {
		return podid.Identity{}, refuse(ctl.CodeUnavailable, "cannot verify the server endpoints of %s now: %w", key, errors.Join(reasons...))
	}
	if silent > 0 {
		return podid.Identity{}, refuse(ctl.CodeNoServer, "no live server of %s on node %s (%d endpoint(s) did not answer within %v); %s", key, s.opts.NodeName, silent, s.opts.EndpointAnswerTimeout, serversRun(port, s.opts.NodeName))
	}
	return podid.Identity{}, refuse(ctl.CodeNoServer, "no live server of %s on node %s; %s", key, s.opts.NodeName, serversRun(port, s.opts.NodeName))
}

// maxNodesNamed bounds the nodes a no-server refusal names.
const maxNodesNamed = 8

// serversRun says where the port's server pods run, from its status (the
// operator's view, which may lag by seconds), for a client that found
// none on its own node: the fix is to run one here (a DaemonSet, or pod
// affinity to the servers) or to wait for one (Config.WaitForServer).
func serversRun(port *kalpcv1alpha1.ConnectionPort, here string) string {
	var nodes []string
	for _, e := range port.Status.Endpoints {
		switch {
		case len(e.Pods) == 0:
		case e.NodeName == here:
			// A server pod here that has not published (starting, or
			// its application has not called Publish).
			nodes = append(nodes, e.NodeName+" (this node: not published yet)")
		default:
			nodes = append(nodes, e.NodeName)
		}
	}
	switch {
	case len(nodes) == 0:
		return "the port has no server pods on any node (ConnectionPort status)"
	case len(nodes) > maxNodesNamed:
		return fmt.Sprintf("its server pods run on %s and %d other nodes (ConnectionPort status); run one on this node or wait for one", strings.Join(nodes[:maxNodesNamed], ", "), len(nodes)-maxNodesNamed)
	}
	return fmt.Sprintf("its server pods run on %s (ConnectionPort status); run one on this node or wait for one", strings.Join(nodes, ", "))
}

// tryServer runs the client side of the handshake with one server
// endpoint. The client's token is sent only after the server's identity
// has been verified.
func (s *Sidecar) tryServer(ctx context.Context, pc *net.UnixConn, port *kalpcv1alpha1.ConnectionPort, uid string, msg []byte) (podid.Identity, *ctl.Message, *os.File, error) {
	var server podid.Identity
	// A server sidecar answers at once (its hello needs no API call), so
	// the first answer has its own short bound: an endpoint that accepts
	// and stays silent (planted, or a hung process) costs this, not the
	// whole connect budget. Once the server sidecar has proved itself, the
	// rest (the server application's decision) may take the budget.
	helloCtx, cancel := context.WithTimeout(ctx, s.opts.EndpointAnswerTimeout)
	stopHello := ctl.Deadline(helloCtx, pc)
	hello, f, err := ctl.Read(pc)
	stopHello()
	cancel()
	// The socket's deadline may pass a moment before helloCtx's timer
	// fires: the error says which ended the wait.
	silent := errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil
	if f != nil {
		_ = f.Close()
	}
	if err != nil {
		switch {
		case errors.Is(err, ctl.ErrMalformed):
			return server, nil, nil, fmt.Errorf("%w: %w", errServerIdentity, err)
		case silent:
			return server, nil, nil, fmt.Errorf("%w: no answer within %v", errEndpointSilent, s.opts.EndpointAnswerTimeout)
		}
		return server, nil, nil, fmt.Errorf("%w: %w", errEndpointGone, err)
	}
	stop := ctl.Deadline(ctx, pc)
	defer stop()
	switch hello.Type {
	case ctl.TypePeerHello:
	case ctl.TypePeerRefused:
		if hello.Code == ctl.CodeLimit {
			// The server sidecar has no room for another handshake now:
			// another server of the port may.
			return server, nil, nil, fmt.Errorf("%w: %w", errEndpointBusy, refuse(hello.Code, "%s", hello.Reason))
		}
		return server, nil, nil, refuse(hello.Code, "%s", hello.Reason)
	default:
		return server, nil, nil, fmt.Errorf("%w: endpoint opened with a %v message", errServerIdentity, hello.Type)
	}
	server, err = s.verifyServer(ctx, pc, port, uid, hello.Token)
	if err != nil && checkUnavailable(err) {
		return server, nil, nil, &unverifiableError{err}
	}
	if err != nil {
		return server, nil, nil, fmt.Errorf("%w: %w", errServerIdentity, err)
	}
	token, err := s.token.Token()
	if err != nil {
		return server, nil, nil, refuse(ctl.CodeUnavailable, "client sidecar cannot read its token: %w", err)
	}
	if err := ctl.Write(pc, &ctl.Message{Type: ctl.TypePeerConnect, Token: token, Namespace: port.Namespace, Name: port.Name, Payload: msg}, nil); err != nil {
		return server, nil, nil, fmt.Errorf("%w: %w", errEndpointGone, err)
	}
	resp, f, err := ctl.Read(pc)
	if err != nil {
		if ctx.Err() != nil {
			return server, nil, nil, refuse(ctl.CodeUnavailable, "server did not answer in time")
		}
		// The server's sidecar went away mid-handshake (its pod is
		// dying): no channel was handed over, so another server may
		// take us.
		return server, nil, nil, fmt.Errorf("%w: server sidecar closed the connection: %w", errEndpointGone, err)
	}
	switch resp.Type {
	case ctl.TypePeerAccepted:
		return server, resp, f, nil
	case ctl.TypePeerRefused:
		return server, nil, nil, refuse(resp.Code, "%s", resp.Reason)
	}
	if f != nil {
		_ = f.Close()
	}
	return server, nil, nil, refuse(ctl.CodeUnavailable, "server sidecar answered with a %v message", resp.Type)
}
