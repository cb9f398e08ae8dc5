package sidecar

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/internal/sidecar/metrics"
)

// acceptApps serves the pod socket.
func (s *Sidecar) acceptApps() {
	defer s.wg.Done()
	for {
		c, err := s.podLn.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("accepting on the pod socket failed; no new requests are served", "error", err)
			}
			return
		}
		select {
		case s.appSlots <- struct{}{}:
		default:
			s.refuseConn(c, metrics.ListenerPod, s.opts.MaxAppConnections)
			continue
		}
		s.track(c, true)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.appSlots }()
			defer s.track(c, false)
			defer c.Close()
			s.serveApp(c)
		}()
	}
}

// serveApp reads an application's first request and runs it.
func (s *Sidecar) serveApp(c *net.UnixConn) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.HandshakeTimeout)
	stop := ctl.Deadline(ctx, c)
	m, f, err := ctl.Read(c)
	stop()
	cancel()
	_ = c.SetDeadline(time.Time{})
	if f != nil {
		_ = f.Close() // unreachable: requests carry no descriptors
	}
	if err != nil {
		s.log.Debug("reading an application request failed", "error", err)
		if errors.Is(err, ctl.ErrMalformed) {
			s.replyError(c, ctl.CodeInvalid, err.Error())
		}
		return
	}
	switch m.Type {
	case ctl.TypePublish:
		s.publish(c, m.Name)
	case ctl.TypeConnect:
		s.connect(c, m)
	default:
		s.replyError(c, ctl.CodeInvalid, "the first message must be publish or connect, not "+m.Type.String())
	}
}

// replyError answers an application's first message with an error. Errors
// for later messages travel on their own request ids.
func (s *Sidecar) replyError(c *net.UnixConn, code ctl.Code, reason string) {
	_ = ctl.Write(c, refusalMessage(ctl.TypeError, 0, code, reason), nil)
}
