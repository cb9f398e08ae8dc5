package sidecar

import (
	"net"
	"sync"
	"time"

	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/internal/sidecar/metrics"
)

// refusalLogInterval is the least time between two logs of refused
// connections: a flood must not turn into a flood of log lines.
const refusalLogInterval = 10 * time.Second

// refusalLog rate-limits the warnings about refused connections.
type refusalLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed map[string]int // by listener, since the last log
}

// refuseConn closes a connection its listener has no room for, after a
// best-effort refusal naming the limit (a fresh socket's send buffer is
// empty: the write does not block). It counts the refusal and logs at most
// once per refusalLogInterval.
func (s *Sidecar) refuseConn(c *net.UnixConn, listener string, limit int) {
	typ, reason := ctl.TypePeerRefused, "the server's kalpc sidecar has its most peer connections open (--max-peer-connections)"
	if listener == metrics.ListenerPod {
		typ, reason = ctl.TypeError, "the pod's kalpc sidecar has its most connections open (--max-app-connections)"
	}
	m := refusalMessage(typ, 0, ctl.CodeLimit, reason)
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_ = ctl.Write(c, m, nil)
	_ = c.Close()
	s.metrics.RefusedConnections.WithLabelValues(listener).Inc()

	r := &s.refusals
	r.mu.Lock()
	if r.suppressed == nil {
		r.suppressed = map[string]int{}
	}
	r.suppressed[listener]++
	if time.Since(r.last) < refusalLogInterval {
		r.mu.Unlock()
		return
	}
	counts := r.suppressed
	r.suppressed, r.last = nil, time.Now()
	r.mu.Unlock()
	s.log.Warn("refusing connections: listener at its limit", "listener", listener, "limit", limit,
		"refusedSinceLastLog", counts)
}
