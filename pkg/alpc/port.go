package alpc

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/internal/peertext"
)

// Port is a connection port published through the pod's kalpc broker with
// Publish: the brokered kind of Acceptor, beside a Listener. The broker delivers only
// requests from clients whose identity it verified and whose access the
// port's rules allow; the server takes them with Accept and accepts or
// rejects each.
//
// A Port owns its control connection to the broker; closing it (or the
// process exiting) unpublishes the port. Conns already accepted are not
// affected.
type Port struct {
	name   string
	cfg    Config
	policy Policy
	conn   *net.UnixConn
	log    *slog.Logger

	writeMu sync.Mutex
	reqs    chan *ConnRequest

	mu      sync.Mutex
	waiting map[uint64]chan handover // accepted requests awaiting their channel
	err     error                    // why the port ended

	closeOnce sync.Once
	done      chan struct{}
	readDone  chan struct{}
}

// handover is the broker's answer to an accepted request: the channel
// (a file) or an error message.
type handover struct {
	m *ctl.Message
	f *os.File
}

// Publish publishes the connection port name in the pod's namespace
// through the broker at KALPC_SOCKET. The broker checks that a port of that
// name exists and that this pod may serve it; the error otherwise is a
// *BrokerError matching ErrPortNotFound or ErrNotServer. Conns accepted on
// the Port use cfg (its Handler serves their requests) restricted by the
// port's Policy. ctx bounds only the publication.
func Publish(ctx context.Context, name string, cfg *Config) (*Port, error) {
	if err := platformError(); err != nil {
		return nil, &BrokerError{Op: "publish", Port: name, Err: err}
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ctl.CheckName(name); err != nil {
		return nil, &BrokerError{Op: "publish", Port: name, Err: ErrInvalidPortName, Reason: err.Error()}
	}
	sc, err := dialBroker(ctx, "publish", name)
	if err != nil {
		return nil, err
	}
	resp, _, err := exchange(ctx, sc, &ctl.Message{Type: ctl.TypePublish, Name: name})
	if err != nil {
		_ = sc.Close()
		return nil, &BrokerError{Op: "publish", Port: name, Err: ErrBrokerUnavailable, Reason: err.Error()}
	}
	switch resp.Type {
	case ctl.TypePublished:
	case ctl.TypeError:
		_ = sc.Close()
		return nil, brokerError("publish", name, resp)
	default:
		_ = sc.Close()
		return nil, fmt.Errorf("alpc: publish %s: broker answered with a %v message", name, resp.Type)
	}
	p := &Port{
		name:     name,
		cfg:      c,
		policy:   policyFromWire(resp.Policy),
		conn:     sc,
		log:      slog.Default().With("component", "alpc", "port", name),
		reqs:     make(chan *ConnRequest, c.MaxPendingConnections),
		waiting:  make(map[uint64]chan handover),
		done:     make(chan struct{}),
		readDone: make(chan struct{}),
	}
	go p.readLoop()
	return p, nil
}

// Name returns the port's name.
func (p *Port) Name() string { return p.name }

// Policy returns the port's message policy as the broker reported it when
// the port was published. Each accepted Conn gets the policy current at its
// connection.
func (p *Port) Policy() Policy { return p.policy }

// Accept waits for the next connection request (see Acceptor). Its Peer
// has the client pod's verified Identity. The broker refuses requests left
// unanswered for its handshake timeout. Accept returns ErrClosed after
// Close, or a *BrokerError if the broker went away.
func (p *Port) Accept(ctx context.Context) (*ConnRequest, error) {
	select {
	case r := <-p.reqs:
		return r, nil
	case <-p.readDone:
		select {
		case r := <-p.reqs:
			return r, nil
		default:
		}
		return nil, p.endErr()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close unpublishes the port. Requests not yet accepted are refused by the
// broker; Accept returns ErrClosed. Close returns nil the first time and
// ErrClosed afterwards.
func (p *Port) Close() error {
	err := ErrClosed
	p.closeOnce.Do(func() {
		err = nil
		p.mu.Lock()
		if p.err == nil {
			p.err = ErrClosed
		}
		p.mu.Unlock()
		close(p.done)
		_ = p.conn.Close()
		<-p.readDone
	})
	return err
}

func (p *Port) endErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	return ErrClosed
}

func (p *Port) readLoop() {
	defer close(p.readDone)
	for {
		m, f, err := ctl.Read(p.conn)
		if err != nil {
			p.mu.Lock()
			if p.err == nil {
				p.err = &BrokerError{Op: "accept", Port: p.name, Err: ErrBrokerUnavailable, Reason: fmt.Sprintf("control connection ended: %v", err)}
			}
			waiting := p.waiting
			p.waiting = nil
			p.mu.Unlock()
			for _, ch := range waiting {
				close(ch)
			}
			return
		}
		switch m.Type {
		case ctl.TypeIncoming:
			id := m.Peer
			r := &ConnRequest{
				Message: m.Payload,
				Peer:    Peer{Identity: &id},
				answer:  &brokeredRequest{port: p, id: m.ID},
			}
			select {
			case p.reqs <- r:
			default:
				_ = r.Reject("server busy: too many pending connection requests")
			}
		case ctl.TypeChannel, ctl.TypeError:
			p.mu.Lock()
			ch := p.waiting[m.ID]
			delete(p.waiting, m.ID)
			p.mu.Unlock()
			if ch == nil {
				if f != nil {
					_ = f.Close()
				}
				p.log.Debug("broker answer for an unknown request", "id", m.ID, "type", m.Type)
				continue
			}
			ch <- handover{m: m, f: f}
		default:
			if f != nil {
				_ = f.Close()
			}
			p.log.Warn("unexpected message from the broker; unpublishing", "type", m.Type)
			_ = p.conn.Close()
		}
	}
}

func (p *Port) write(m *ctl.Message) error {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	_ = p.conn.SetWriteDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	return ctl.Write(p.conn, m, nil)
}

// brokeredRequest answers a Port's connection request through the broker,
// which hands over the channel on accept.
type brokeredRequest struct {
	port *Port
	id   uint64
}

func (r *brokeredRequest) accept(reply []byte) (*Conn, error) {
	p := r.port
	ch := make(chan handover, 1)
	p.mu.Lock()
	if p.waiting == nil {
		p.mu.Unlock()
		return nil, p.endErr()
	}
	p.waiting[r.id] = ch
	p.mu.Unlock()
	if err := p.write(&ctl.Message{Type: ctl.TypeAccept, ID: r.id, Payload: reply}); err != nil {
		p.mu.Lock()
		delete(p.waiting, r.id)
		p.mu.Unlock()
		return nil, fmt.Errorf("alpc: accept on %s: %w", p.name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.HandshakeTimeout)
	defer cancel()
	var a handover
	var ok bool
	select {
	case a, ok = <-ch:
		if !ok {
			return nil, p.endErr()
		}
	case <-ctx.Done():
		p.mu.Lock()
		delete(p.waiting, r.id)
		p.mu.Unlock()
		return nil, &BrokerError{Op: "accept", Port: p.name, Err: ErrBrokerUnavailable, Reason: "broker did not hand over the channel in time"}
	}
	if a.m.Type == ctl.TypeError {
		return nil, brokerError("accept", p.name, a.m)
	}
	defer a.f.Close()
	cfg := policyFromWire(a.m.Policy).apply(p.cfg)
	conn, err := FileConn(ctx, a.f, &cfg)
	if err != nil {
		return nil, fmt.Errorf("alpc: accept on %s: %w", p.name, err)
	}
	// Tell the broker when the channel ends, so it can count the port's
	// connections against its limit.
	go func() {
		select {
		case <-conn.Done():
			_ = p.write(&ctl.Message{Type: ctl.TypeClosed, ID: r.id})
		case <-p.done:
		}
	}()
	return conn, nil
}

func (r *brokeredRequest) reject(reason string) error {
	reason = peertext.Truncate(reason, MaxConnectionMessage)
	if err := r.port.write(&ctl.Message{Type: ctl.TypeReject, ID: r.id, Reason: reason}); err != nil {
		return fmt.Errorf("alpc: reject on %s: %w", r.port.name, err)
	}
	return nil
}
