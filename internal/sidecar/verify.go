package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/internal/podid"
	"github.com/kalpc/kalpc/internal/sidecar/identity"
	"github.com/kalpc/kalpc/internal/sidecar/nodedir"
	"github.com/kalpc/kalpc/internal/sidecar/policy"
)

// The identity checks of brokering: verifyPeer, which both sides make of
// each other (the client sidecar of the server first, then the server
// sidecar of the client), and verifyServer, the client side's further
// checks of a server endpoint.

// verifyPeer verifies a peer sidecar's token and binds it to the process
// at the other end of c: the process holding the identity socket of the
// token's pod on this node.
func (s *Sidecar) verifyPeer(ctx context.Context, c *net.UnixConn, token string) (podid.Identity, error) {
	var id podid.Identity
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
		return id, refuse(ctl.CodeUnauthenticated, "token of pod %s presented, but that pod has no live sidecar on this node: %w", id, err)
	}
	if got != want {
		return id, refuse(ctl.CodeUnauthenticated, "token of pod %s presented by a process that is not that pod's sidecar (replayed token?)", id)
	}
	return id, nil
}

// verifyServer checks a server endpoint's identity: a valid token of a pod
// whose UID names the endpoint, presented by that pod's sidecar, in the
// port's namespace and selected by spec.servers (anti name-squatting).
func (s *Sidecar) verifyServer(ctx context.Context, pc *net.UnixConn, port *kalpcv1alpha1.ConnectionPort, uid, token string) (podid.Identity, error) {
	id, err := s.verifyPeer(ctx, pc, token)
	if err != nil {
		return id, err
	}
	if id.PodUID != uid {
		return id, fmt.Errorf("endpoint of pod uid %s presented the token of pod %s", uid, id)
	}
	if id.Namespace != port.Namespace {
		return id, fmt.Errorf("pod %s is not in the port's namespace %s", id, port.Namespace)
	}
	pod, err := s.engine.Pod(ctx, id)
	if err != nil {
		return id, err
	}
	if err := policy.MayServe(port, pod); err != nil {
		return id, err
	}
	return id, nil
}
