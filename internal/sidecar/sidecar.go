package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kalpc/kalpc/internal/podid"
	"github.com/kalpc/kalpc/internal/sidecar/connections"
	"github.com/kalpc/kalpc/internal/sidecar/identity"
	"github.com/kalpc/kalpc/internal/sidecar/metrics"
	"github.com/kalpc/kalpc/internal/sidecar/nodedir"
	"github.com/kalpc/kalpc/internal/sidecar/policy"
)

// DefaultEndpointAnswerTimeout is Options.EndpointAnswerTimeout's default:
// a server sidecar's first answer needs no API call, only its token file.
const DefaultEndpointAnswerTimeout = 2 * time.Second

// Defaults of the connection bounds. Each connection held costs the
// sidecar a goroutine, a socket and timers (about 24 KiB resident while it
// waits for a message; its 64 KiB read buffer only while one is read):
// 64 + 256 connections hold about 8 MiB of the sidecar's 128 Mi limit
// (TestIdleConnectionFloodIsBounded measures it).
const (
	// DefaultMaxAppConnections is MaxAppConnections' default: a pod's
	// applications publish a few ports and run a few connects at once.
	DefaultMaxAppConnections = 64
	// DefaultMaxPeerConnections is MaxPeerConnections' default: handshakes
	// in progress from every client pod on the node, each lasting until
	// the server application decides.
	DefaultMaxPeerConnections = 256
)

// Options configure a Sidecar.
type Options struct {
	// PodSocket is the path of the pod-local control socket (required).
	PodSocket string
	// NodeDir is the node directory (required).
	NodeDir string
	// TokenFile is the projected token presented to peers (required).
	TokenFile string
	// Pod is this sidecar's own pod, from the downward API (Namespace,
	// PodName and PodUID required).
	Pod podid.Identity
	// NodeName is the node the pod runs on, from the downward API. When
	// set, peers' tokens of pods bound to another node are refused.
	NodeName string
	// Reader reads ConnectionPorts and Namespaces, normally from an
	// informer cache (required).
	Reader client.Reader
	// APIReader reads pods directly from the API server (required).
	APIReader client.Reader
	// TokenReviews verifies peers' tokens (required).
	TokenReviews authnclient.TokenReviewInterface
	// Metrics receives the sidecar's metrics. Defaults to a new set.
	Metrics *metrics.Metrics
	// Log is the structured logger. Defaults to slog.Default(). The
	// sidecar's lines do not name the pod: the caller's logger does, once
	// for every line (cmd/sidecar adds pod=NAMESPACE/NAME).
	Log *slog.Logger
	// HandshakeTimeout bounds each step of brokering a connection,
	// including the server application's answer. Defaults to 10s.
	HandshakeTimeout time.Duration
	// EndpointAnswerTimeout bounds the wait for a server sidecar's first
	// answer on each endpoint a connect tries; an endpoint silent for
	// longer is skipped. The server application's decision, which comes
	// after, is bounded by HandshakeTimeout. Defaults to 2s.
	EndpointAnswerTimeout time.Duration
	// MaxAppConnections bounds the connections open at once on the pod
	// socket: requests in progress and published ports (each holds its
	// control connection). Excess connections are refused at once with
	// ErrLimit. Defaults to DefaultMaxAppConnections.
	MaxAppConnections int
	// MaxPeerConnections bounds the connections open at once on all of
	// the pod's endpoints together (client sidecars' handshakes). Excess
	// connections are refused at once. Defaults to
	// DefaultMaxPeerConnections.
	MaxPeerConnections int
	// SweepInterval is how often stale node-directory entries are removed.
	// Defaults to 30s.
	SweepInterval time.Duration
	// ForbiddenGrace is how long after start 403 answers from the API
	// server are retried: the operator grants the sidecar's RBAC shortly
	// after the pod is created. Defaults to 30s.
	ForbiddenGrace time.Duration
}

// Sidecar brokers the connections of one pod.
type Sidecar struct {
	opts     Options
	log      *slog.Logger
	dir      nodedir.Dir
	token    identity.TokenFile
	verifier *identity.Verifier
	engine   *policy.Engine
	metrics  *metrics.Metrics
	conns    connections.Registry // connections brokered as the server side
	started  time.Time

	podLn    *net.UnixListener
	podIno   uint64
	identity *nodedir.Listener

	appSlots  chan struct{} // one per open pod-socket connection
	peerSlots chan struct{} // one per open endpoint connection, all endpoints
	refusals  refusalLog

	ctx      context.Context
	cancel   context.CancelFunc
	stopping chan struct{} // closed when shutdown starts
	wg       sync.WaitGroup

	mu    sync.Mutex
	pubs  map[string]*publication // by port name
	apps  map[*net.UnixConn]struct{}
	rr    map[string]uint64 // round-robin cursor by port
	ready bool

	own ownLabels // the pod's labels, for Published (readiness.go)
}

// New checks opts and returns a Sidecar; Run starts it.
func New(opts Options) (*Sidecar, error) {
	switch {
	case opts.PodSocket == "", opts.NodeDir == "", opts.TokenFile == "":
		return nil, errors.New("sidecar: pod socket, node directory and token file are required")
	case opts.Pod.PodName == "" || opts.Pod.Namespace == "" || !nodedir.ValidUID(opts.Pod.PodUID):
		return nil, fmt.Errorf("sidecar: pod name, namespace and a valid UID are required (got %+v)", opts.Pod)
	case opts.Reader == nil || opts.APIReader == nil || opts.TokenReviews == nil:
		return nil, errors.New("sidecar: API readers and the TokenReview client are required")
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.HandshakeTimeout == 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	if opts.EndpointAnswerTimeout == 0 {
		opts.EndpointAnswerTimeout = DefaultEndpointAnswerTimeout
	}
	if opts.MaxAppConnections == 0 {
		opts.MaxAppConnections = DefaultMaxAppConnections
	}
	if opts.MaxPeerConnections == 0 {
		opts.MaxPeerConnections = DefaultMaxPeerConnections
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = 30 * time.Second
	}
	if opts.ForbiddenGrace == 0 {
		opts.ForbiddenGrace = 30 * time.Second
	}
	s := &Sidecar{
		opts:    opts,
		log:     opts.Log,
		dir:     nodedir.Dir{Root: opts.NodeDir},
		token:   identity.TokenFile(opts.TokenFile),
		metrics: opts.Metrics,
		started: time.Now(),
		pubs:    make(map[string]*publication),
		apps:    make(map[*net.UnixConn]struct{}),
		rr:      make(map[string]uint64),

		appSlots:  make(chan struct{}, opts.MaxAppConnections),
		peerSlots: make(chan struct{}, opts.MaxPeerConnections),

		stopping: make(chan struct{}),
	}
	s.verifier = &identity.Verifier{Reviews: opts.TokenReviews, NodeName: opts.NodeName}
	s.engine = &policy.Engine{Reader: opts.Reader, Pods: &policy.CachedPods{Client: forbiddenRetrier{s: s, r: opts.APIReader}}}
	return s, nil
}

// Run serves until ctx is done, then shuts down gracefully: it stops
// accepting, unpublishes the pod's ports (removing their node-directory
// entries) and waits for brokering in progress to end, at most
// HandshakeTimeout. Channels already handed over are not affected.
func (s *Sidecar) Run(ctx context.Context) error {
	if err := s.start(); err != nil {
		s.stop()
		return err
	}
	// No "pod" key: Log carries it (see Options.Log).
	s.log.Info("sidecar serving", "podSocket", s.opts.PodSocket, "nodeDir", s.opts.NodeDir,
		"podUID", s.opts.Pod.PodUID)
	s.wg.Add(2)
	go s.acceptApps()
	go s.maintain()
	<-ctx.Done()
	s.log.Info("sidecar shutting down")
	s.stop()
	return nil
}

func (s *Sidecar) start() error {
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.dir.Init(); err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	s.sweep()
	id, err := nodedir.Listen(s.dir.IdentityPath(s.opts.Pod.PodUID))
	if err != nil {
		if errors.Is(err, nodedir.ErrInUse) {
			return fmt.Errorf("sidecar: another live process holds the identity socket of pod %s: %w", s.opts.Pod.PodUID, err)
		}
		return fmt.Errorf("sidecar: %w", err)
	}
	s.identity = id
	go nodedir.ServeIdentity(id)
	if err := s.listenPodSocket(); err != nil {
		return err
	}
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	return nil
}

// listenPodSocket creates the pod-local control socket, mode 0666: the
// emptyDir is reachable only by this pod's containers, and applications may
// run as any UID.
func (s *Sidecar) listenPodSocket() error {
	p := s.opts.PodSocket
	if st, err := os.Lstat(p); err == nil {
		if st.Mode().Type() != fs.ModeSocket {
			return fmt.Errorf("sidecar: %s exists and is not a socket", p)
		}
		// A previous sidecar of this pod (restarted) left it; only this
		// pod's containers can reach the emptyDir, so it is ours to replace.
		_ = os.Remove(p)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: p, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("sidecar: listening on the pod socket: %w", err)
	}
	if err := os.Chmod(p, 0o666); err != nil {
		_ = ln.Close()
		return fmt.Errorf("sidecar: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		_ = ln.Close()
		return fmt.Errorf("sidecar: %w", err)
	}
	s.podLn, s.podIno = ln, st.Ino
	return nil
}

func (s *Sidecar) stop() {
	close(s.stopping)
	s.mu.Lock()
	s.ready = false
	pubs := s.pubs
	s.pubs = map[string]*publication{}
	apps := s.apps
	s.mu.Unlock()
	if s.podLn != nil {
		_ = s.podLn.Close()
	}
	for _, p := range pubs {
		p.close()
	}
	// Let brokering in progress finish, then cut the rest.
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	if s.cancel != nil {
		select {
		case <-done:
		case <-time.After(s.opts.HandshakeTimeout):
		}
		s.cancel()
	}
	for c := range apps {
		_ = c.Close()
	}
	<-done
	if s.identity != nil {
		_ = s.identity.Close()
	}
}

// Ready reports whether the sidecar can serve: its pod socket and identity
// socket are in place and the node directory is usable.
func (s *Sidecar) Ready() error {
	s.mu.Lock()
	ready := s.ready
	s.mu.Unlock()
	if !ready {
		return errors.New("not serving")
	}
	var st unix.Stat_t
	if err := unix.Lstat(s.opts.PodSocket, &st); err != nil || st.Ino != s.podIno {
		return fmt.Errorf("pod socket %s is missing or was replaced", s.opts.PodSocket)
	}
	if err := s.dir.Check(); err != nil {
		return err
	}
	if !s.identity.Intact() {
		return errors.New("identity socket in the node directory is missing or was replaced")
	}
	return nil
}

// maintain sweeps stale entries and checks the pod's own entries.
func (s *Sidecar) maintain() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopping:
			return
		case <-t.C:
		}
		s.sweep()
		if !s.identity.Intact() {
			s.log.Error("identity socket was removed or replaced by another process; connections of this pod will be refused until the sidecar restarts", "path", s.identity.Path())
		}
	}
}

func (s *Sidecar) sweep() {
	n, err := s.dir.Sweep()
	if n > 0 {
		s.metrics.StaleEntries.Add(float64(n))
		s.log.Info("removed stale node-directory entries", "count", n)
	}
	if err != nil {
		s.log.Warn("sweeping the node directory", "error", err)
	}
}

// track registers an application connection so shutdown can close it.
func (s *Sidecar) track(c *net.UnixConn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.apps[c] = struct{}{}
	} else {
		delete(s.apps, c)
	}
}

// ConnectionsHandler serves, read-only and as JSON, the connections this
// sidecar brokered as the server side and still believes open (see package
// connections for exactly what that means). The sidecar mounts it at
// connections.Path on its metrics server.
func (s *Sidecar) ConnectionsHandler() http.Handler {
	return s.conns.Handler(connections.List{Pod: connections.PodOf(s.opts.Pod), Node: s.opts.NodeName, SidecarStarted: s.started})
}
