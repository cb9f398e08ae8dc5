package sidecar

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

// PublishedPath is the health endpoint that passes only while the pod's
// application serves every ConnectionPort that selects the pod as a server
// (see Sidecar.Published). The webhook makes it the sidecar's readiness
// probe, so that a server pod is Ready, and counts in the ports' status,
// only while it actually serves.
const PublishedPath = "/readyz/published"

// Bounds of Published's work. A probe costs no API request: ConnectionPorts
// come from the informer cache, and the pod's labels are read from the API
// server once at the first probe and again at most once per
// LabelRefreshInterval, only while a port that selects the pod by the
// labels known is not published (so a pod relabelled out of a port's
// servers becomes ready again within that interval).
const (
	// LabelRefreshInterval is the most often the pod's labels are re-read.
	LabelRefreshInterval = 30 * time.Second
	// publishedListTimeout bounds the wait for the ConnectionPort cache
	// (it is synced once; a probe before that fails at once).
	publishedListTimeout = 500 * time.Millisecond
	// labelsWait bounds how long a probe waits for the pod's labels when
	// none were read yet.
	labelsWait = 500 * time.Millisecond
	// maxListedMissing bounds the port names an answer lists.
	maxListedMissing = 10
)

// ownLabels holds the labels of the sidecar's own pod, as last read.
type ownLabels struct {
	mu       sync.Mutex
	labels   labels.Set    // nil until first read
	at       time.Time     // when labels were read
	err      error         // the last read's error
	fetching chan struct{} // non-nil while a read runs; closed when it ends

	last string // Published's last answer ("" for none yet), to log changes
}

// Published reports whether the pod serves every ConnectionPort that
// selects it as a server: the sidecar is Ready, and each port in the pod's
// namespace whose spec.servers matches the pod's labels is published by the
// application through this sidecar, its publication live (the application
// holds its control connection and the endpoint is in the node directory).
// Ports that do not select the pod do not matter, nor do ports the pod
// publishes beyond them. The error names what is missing.
func (s *Sidecar) Published(ctx context.Context) error {
	err := s.published(ctx)
	// The kubelet's probe events do not carry the answer: log each change
	// (at most one line per probe that changes the answer).
	msg := "ok"
	if err != nil {
		msg = err.Error()
	}
	s.own.mu.Lock()
	changed := msg != s.own.last
	s.own.last = msg
	s.own.mu.Unlock()
	if changed {
		if err != nil {
			s.log.Info("published readiness: not ready", "reason", msg)
		} else {
			s.log.Info("published readiness: ready (every ConnectionPort selecting this pod is published)")
		}
	}
	return err
}

func (s *Sidecar) published(ctx context.Context) error {
	if err := s.Ready(); err != nil {
		return err
	}
	ls, err := s.podLabels(ctx)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, publishedListTimeout)
	defer cancel()
	var ports kalpcv1alpha1.ConnectionPortList
	if err := s.opts.Reader.List(lctx, &ports, client.InNamespace(s.opts.Pod.Namespace)); err != nil {
		return fmt.Errorf("the ConnectionPorts of namespace %s are not known yet: %w", s.opts.Pod.Namespace, err)
	}
	var missing []string
	for i := range ports.Items {
		p := &ports.Items[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		sel, err := p.Spec.Servers.AsSelector()
		if err != nil || !sel.Matches(ls) {
			// A port with an invalid selector has no servers at all.
			continue
		}
		if !s.publishedLive(p.Name) {
			missing = append(missing, p.Name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	// The labels may be stale: a pod relabelled out of the port's servers
	// must not stay unready for ever.
	s.refreshLabels(LabelRefreshInterval)
	slices.Sort(missing)
	n := len(missing)
	if n > maxListedMissing {
		missing = append(missing[:maxListedMissing], fmt.Sprintf("and %d more", n-maxListedMissing))
	}
	return fmt.Errorf("the application has not published %d ConnectionPort(s) that select this pod as a server: %s", n, strings.Join(missing, ", "))
}

// publishedLive reports whether the application publishes name through
// this sidecar and the publication is live.
func (s *Sidecar) publishedLive(name string) bool {
	s.mu.Lock()
	p := s.pubs[name]
	s.mu.Unlock()
	if p == nil || !p.live.Load() {
		return false
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	return !closed && p.endpoint.Intact()
}

// podLabels returns the pod's labels as last read; the first call reads
// them, waiting at most labelsWait (and ctx).
func (s *Sidecar) podLabels(ctx context.Context) (labels.Set, error) {
	o := &s.own
	o.mu.Lock()
	ls := o.labels
	o.mu.Unlock()
	if ls != nil {
		return ls, nil
	}
	done := s.refreshLabels(0)
	t := time.NewTimer(labelsWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.labels == nil {
		err := o.err
		if err == nil {
			err = errors.New("still reading")
		}
		return nil, fmt.Errorf("this pod's labels are not read yet: %w", err)
	}
	return o.labels, nil
}

// refreshLabels starts reading the pod's labels unless a read is running or
// the labels are younger than maxAge; the channel returned is closed when
// the read (the one started or the one running) ends, or is already closed.
func (s *Sidecar) refreshLabels(maxAge time.Duration) <-chan struct{} {
	o := &s.own
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fetching != nil {
		return o.fetching
	}
	if o.labels != nil && time.Since(o.at) < maxAge {
		return closedChan
	}
	ch := make(chan struct{})
	o.fetching = ch
	go func() {
		defer close(ch)
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.HandshakeTimeout)
		defer cancel()
		pod, err := s.engine.Pod(ctx, s.opts.Pod)
		o.mu.Lock()
		defer o.mu.Unlock()
		o.fetching = nil
		o.err = err
		if err != nil {
			s.log.Warn("reading this pod's labels for the published readiness failed", "error", err)
			return
		}
		// A copy: the pod read is shared with the policy cache.
		ls := maps.Clone(pod.Labels)
		if ls == nil {
			ls = map[string]string{}
		}
		o.labels = ls
		o.at = time.Now()
	}()
	return ch
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
