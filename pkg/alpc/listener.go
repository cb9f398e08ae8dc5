package alpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kalpc/kalpc/internal/peertext"
	"github.com/kalpc/kalpc/internal/socklock"
	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// maxSocketPath is sizeof(sockaddr_un.sun_path).
const maxSocketPath = 108

func checkSocketPath(path string) error {
	if path == "" {
		return errors.New("empty socket path")
	}
	if len(path) >= maxSocketPath {
		return fmt.Errorf("socket path of %d bytes is too long (at most %d)", len(path), maxSocketPath-1)
	}
	return nil
}

// Listener is a published connection port: an AF_UNIX SOCK_SEQPACKET socket
// at a path, an Acceptor. Clients connect with Dial; the server takes their
// connection requests with Accept and accepts or rejects each.
//
// Listen guards the path with a lock file (path + ".lock") held for the
// Listener's lifetime, so a stale socket left by a dead process is replaced
// safely while a live one is never stolen.
type Listener struct {
	path   string
	cfg    Config
	lock   *socklock.Lock
	sock   *sys.Socket
	wakefd int
	log    *slog.Logger

	// slots bounds connection requests in progress: being handshaken,
	// queued for Accept, or returned by Accept and not yet answered.
	slots chan struct{}
	reqs  chan *ConnRequest

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	done      chan struct{}
}

// Listen publishes a connection port at path. It fails with ErrPortInUse
// if a live Listener already holds it. A leftover socket at path (from a
// process that died) is removed; any other kind of file there is an error,
// never deleted. The socket is created with cfg.SocketMode atomically (bound
// under a temporary name, chmod-ed, then renamed into place).
func Listen(path string, cfg *Config) (*Listener, error) {
	if err := checkPlatform("listen"); err != nil {
		return nil, err
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkSocketPath(path); err != nil {
		return nil, fmt.Errorf("alpc: listen %s: %w", path, err)
	}
	l := &Listener{
		path:   path,
		cfg:    c,
		wakefd: -1,
		log:    slog.Default().With("component", "alpc", "port", path),
		slots:  make(chan struct{}, c.MaxPendingConnections),
		reqs:   make(chan *ConnRequest, c.MaxPendingConnections),
		done:   make(chan struct{}),
	}
	if err := l.open(); err != nil {
		l.release()
		return nil, fmt.Errorf("alpc: listen %s: %w", path, err)
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

func (l *Listener) open() error {
	// With the lock held, a stale socket at path (of a process that died)
	// is gone and no live Listener owns the path.
	lock, err := socklock.Acquire(l.path)
	if errors.Is(err, socklock.ErrInUse) {
		return ErrPortInUse
	}
	if err != nil {
		return err
	}
	l.lock = lock
	fd, err := sys.SeqpacketSocket(true)
	if err != nil {
		return err
	}
	l.sock = sys.NewSocket(fd)
	tmp := filepath.Join(filepath.Dir(l.path), socklock.TempName())
	if err := checkSocketPath(tmp); err != nil {
		return err
	}
	if err := sys.Bind(fd, tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, l.cfg.SocketMode); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := sys.Listen(fd, 4096); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, l.path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if l.wakefd, err = sys.Eventfd(); err != nil {
		_ = os.Remove(l.path)
		return err
	}
	return nil
}

// release frees what open acquired. The socket path is removed before the
// lock file, while the lock is still held, so the next Listener never sees a
// half-removed port.
func (l *Listener) release() {
	if l.sock != nil {
		_ = l.sock.Close()
	}
	if l.wakefd >= 0 {
		_ = sys.Close(l.wakefd)
		l.wakefd = -1
	}
	if l.lock != nil {
		l.lock.Release(l.sock != nil)
		l.lock = nil
	}
}

// Name returns the port's socket path.
func (l *Listener) Name() string { return l.path }

// Close unpublishes the port: no new clients can connect, queued
// connection requests are rejected, and Accept returns ErrClosed.
// Connections already accepted are not affected. Close waits for the
// Listener's goroutines and returns nil; later calls return ErrClosed.
func (l *Listener) Close() error {
	err := ErrClosed
	l.closeOnce.Do(func() {
		err = nil
		close(l.done)
		l.cancel()
		sys.EventfdSignal(l.wakefd)
		l.wg.Wait()
		// Nothing adds to reqs any more: reject what is still queued.
		for len(l.reqs) > 0 {
			_ = (<-l.reqs).Reject("connection port closed")
		}
		l.release()
	})
	return err
}

// Accept waits for the next connection request (see Acceptor). Its Peer
// has the client process's Credentials.
func (l *Listener) Accept(ctx context.Context) (*ConnRequest, error) {
	select {
	case r := <-l.reqs:
		return r, nil
	case <-l.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	lfd, err := l.sock.Acquire()
	if err != nil {
		return
	}
	defer l.sock.Release()
	backoff := 5 * time.Millisecond
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return
		}
		woken, err := sys.PollWake(lfd, sys.PollIn, l.wakefd)
		if woken || err != nil {
			<-l.slots
			return
		}
		nfd, err := sys.Accept4(lfd)
		if err != nil {
			<-l.slots
			if sys.IsTemporaryAcceptError(err) {
				if !errors.Is(err, sys.EAGAIN) {
					l.log.Warn("accept failed; retrying", "error", err, "backoff", backoff)
					select {
					case <-time.After(backoff):
					case <-l.done:
						return
					}
					backoff = min(2*backoff, time.Second)
				}
				continue
			}
			l.log.Error("accept failed; port stops accepting", "error", err)
			return
		}
		backoff = 5 * time.Millisecond
		l.wg.Add(1)
		go l.handshake(nfd)
	}
}

// handshake reads a new client's connection message and queues its request.
func (l *Listener) handshake(fd int) {
	defer l.wg.Done()
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.HandshakeTimeout)
	defer cancel()
	req, err := l.readRequest(ctx, fd)
	if err != nil {
		l.log.Debug("connection handshake failed", "error", err)
		_ = sys.Close(fd)
		<-l.slots
		return
	}
	l.reqs <- req // never blocks: slots bound the queue
}

func (l *Listener) readRequest(ctx context.Context, fd int) (*ConnRequest, error) {
	h, payload, err := readHandshake(ctx, fd)
	if err != nil {
		return nil, err
	}
	if h.Type != wire.TypeConnect {
		return nil, protocolErrorf("client opened with a %v message", h.Type)
	}
	peer, msg, err := parseHandshake(payload)
	if err != nil {
		return nil, err
	}
	cred, err := sys.PeerCred(fd)
	if err != nil {
		return nil, err
	}
	c := Credentials(cred)
	return &ConnRequest{
		Message: msg,
		Peer:    Peer{Credentials: &c},
		answer:  &pathRequest{l: l, fd: fd, peer: peer},
	}, nil
}

// pathRequest answers a Listener's connection request on the client's
// socket, which it owns until then.
type pathRequest struct {
	l    *Listener
	fd   int
	peer wire.Params
}

func (r *pathRequest) accept(reply []byte) (*Conn, error) {
	<-r.l.slots
	ctx, cancel := context.WithTimeout(context.Background(), r.l.cfg.HandshakeTimeout)
	defer cancel()
	params := r.l.cfg.params()
	if err := writeHandshake(ctx, r.fd, wire.TypeAccept, &params, reply); err != nil {
		_ = sys.Close(r.fd)
		return nil, fmt.Errorf("alpc: accept: %w", err)
	}
	return newConn(r.fd, &r.l.cfg, r.peer), nil
}

func (r *pathRequest) reject(reason string) error {
	<-r.l.slots
	defer func() { _ = sys.Close(r.fd) }()
	reason = peertext.Truncate(reason, MaxConnectionMessage)
	// Best effort and non-blocking: a client that stopped reading is not
	// worth waiting for.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := writeHandshake(ctx, r.fd, wire.TypeReject, nil, []byte(reason)); err != nil {
		return fmt.Errorf("alpc: reject: %w", err)
	}
	return nil
}
