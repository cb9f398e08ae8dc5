package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// serve publishes the port and answers:
//
//	"ping"                    → "pong from <pod>"
//	"netns"                   → the server's network namespace
//	"shout:<text>"            → calls back into the client ("who are you?") first
//	"blob:<n>"                → n pattern bytes (a section-sized reply)
//	"echo:<bytes>"            → the bytes
//	"grpc-addr"               → host:port of the gRPC echo service on the pod's IP
//	"region-read:<id>"        → hash of the region the client granted with id, read in place
//	"region-fill:<id>:<seed>" → writes pattern bytes into the client's read-write region
//	"grant-me:<n>:<seed>"     → grants the client a read-only region of n pattern bytes: "granted <id>"
//	anything else             → "sha256:<hex> len:<n> shared:<bool>" of the payload, read in place
//
// It also serves the same echo over gRPC on TCP (grpcAddr), for the
// client's -compare, and gRPC's health service there: SERVING once the port
// is published, NOT_SERVING from SIGTERM on. The manifest's readiness probe
// asks it, so that a rolling update waits for the new pod to publish before
// it stops the old one.
func serve(ctx context.Context, port, grpcAddr string, publishDelay time.Duration) error {
	var (
		grpcPublic string
		hs         *health.Server
	)
	if grpcAddr != "" {
		addr, h, stop, err := serveGRPC(grpcAddr)
		if err != nil {
			return err
		}
		defer stop()
		grpcPublic, hs = addr, h
		log.Printf("server: gRPC echo on %s (pod network)", addr)
	}
	var (
		mu      sync.Mutex
		regions = map[*alpc.Conn][]*alpc.Region{} // granted to each client, closed when it goes
		live    = map[*alpc.Conn]bool{}           // drained on SIGTERM
	)
	handler := alpc.HandlerFunc(func(ctx context.Context, req *alpc.Request) ([]byte, error) {
		// A View reads a section-sized payload in place, without a copy.
		v := req.View()
		defer v.Release()
		p := v.Bytes()
		var msg string
		if len(p) < 256 {
			msg = string(p)
		}
		switch {
		case msg == "ping":
			return []byte("pong from " + hostname()), nil
		case msg == "netns":
			return []byte(netns()), nil
		case strings.HasPrefix(msg, "shout:"):
			who, err := req.Conn().Call(ctx, []byte("who are you?"))
			if err != nil {
				return nil, fmt.Errorf("callback failed: %w", err)
			}
			return fmt.Appendf(nil, "%s, %s!", strings.ToUpper(strings.TrimPrefix(msg, "shout:")), who), nil
		case strings.HasPrefix(msg, "blob:"):
			n, err := strconv.Atoi(strings.TrimPrefix(msg, "blob:"))
			if err != nil || n < 0 || n > 64<<20 {
				return nil, fmt.Errorf("bad blob size %q", msg)
			}
			return pattern(n, 0x5a), nil
		case bytes.HasPrefix(p, []byte("echo:")):
			return bytes.Clone(p[len("echo:"):]), nil
		case msg == "grpc-addr":
			if grpcPublic == "" {
				return nil, errors.New("this server runs no gRPC echo")
			}
			return []byte(grpcPublic), nil
		case strings.HasPrefix(msg, "region-read:"):
			return readRegion(req.Conn(), strings.TrimPrefix(msg, "region-read:"))
		case strings.HasPrefix(msg, "region-fill:"):
			return fillRegion(req.Conn(), strings.TrimPrefix(msg, "region-fill:"))
		case strings.HasPrefix(msg, "grant-me:"):
			r, reply, err := grantRegion(ctx, req.Conn(), strings.TrimPrefix(msg, "grant-me:"))
			if r != nil {
				mu.Lock()
				regions[req.Conn()] = append(regions[req.Conn()], r)
				mu.Unlock()
			}
			return reply, err
		default:
			sum := sha256.Sum256(p)
			return fmt.Appendf(nil, "sha256:%s len:%d shared:%t", hex.EncodeToString(sum[:]), len(p), v.Shared()), nil
		}
	})
	if publishDelay > 0 {
		log.Printf("server: publishing port %s in %v", port, publishDelay)
		select {
		case <-time.After(publishDelay):
		case <-ctx.Done():
			return nil
		}
	}
	l, err := alpc.Publish(ctx, port, &alpc.Config{Handler: handler, AllowDirectAccess: true})
	if err != nil {
		return fmt.Errorf("publish %s: %w", port, err)
	}
	defer l.Close()
	log.Printf("server: pod %s published port %s (policy %+v) from %s", hostname(), port, l.Policy(), netns())
	if hs != nil {
		hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		defer hs.Shutdown() // NOT_SERVING while the connections drain
	}
	for {
		req, err := l.Accept(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				// SIGTERM: unpublish, so that new clients go to the
				// other servers, then let every client finish its calls.
				_ = l.Close()
				mu.Lock()
				conns := slices.Collect(maps.Keys(live))
				mu.Unlock()
				drain(conns, drainGrace)
				return nil
			}
			return err
		}
		name := string(req.Message)
		if name == "mallory" {
			log.Printf("server: rejecting %q from %s", name, req.Peer)
			_ = req.Reject("mallory is not welcome here")
			continue
		}
		conn, err := req.Accept(fmt.Appendf(nil, "hello %s, I am %s", name, hostname()))
		if err != nil {
			log.Printf("server: accept: %v", err)
			continue
		}
		log.Printf("server: accepted %q from verified peer %s", name, req.Peer)
		mu.Lock()
		live[conn] = true
		mu.Unlock()
		go func() {
			<-conn.Done()
			log.Printf("server: %q disconnected (%v)", name, conn.Err())
			_ = conn.Close()
			mu.Lock()
			for _, r := range regions[conn] {
				_ = r.Close()
			}
			delete(regions, conn)
			delete(live, conn)
			mu.Unlock()
		}()
	}
}

// drainGrace bounds the drain on SIGTERM; keep it under the pod's
// terminationGracePeriodSeconds (30 s by default).
const drainGrace = 20 * time.Second

// drain shuts the connections down gracefully (Conn.Shutdown): calls in
// progress finish, and the clients' next calls fail with
// alpc.ErrGoingAway without being sent, so that they reconnect to another
// server and lose nothing.
func drain(conns []*alpc.Conn, grace time.Duration) {
	if len(conns) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			if err := c.Shutdown(ctx); err != nil && !errors.Is(err, alpc.ErrPeerClosed) && !errors.Is(err, alpc.ErrClosed) {
				log.Printf("server: shutdown of a connection: %v", err)
			}
		})
	}
	wg.Wait()
	log.Printf("server: drained %d connections in %v", len(conns), time.Since(start).Round(time.Millisecond))
}

// readRegion hashes the region the client granted, reading it in place,
// and checks that a read-only grant refuses writes.
func readRegion(c *alpc.Conn, arg string) ([]byte, error) {
	id, err := strconv.ParseUint(arg, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("bad region id %q", arg)
	}
	rr, err := c.Region(id)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, rr.Len())
	if _, err := rr.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	sum := sha256.Sum256(buf)
	write := "allowed"
	if _, err := rr.WriteAt([]byte{0}, 0); errors.Is(err, alpc.ErrReadOnly) {
		write = "refused"
	} else if err != nil {
		write = err.Error()
	}
	return fmt.Appendf(nil, "sha256:%s len:%d access:%v write:%s", hex.EncodeToString(sum[:]), len(buf), rr.Access(), write), nil
}

// fillRegion writes pattern bytes into the client's read-write region.
func fillRegion(c *alpc.Conn, arg string) ([]byte, error) {
	idStr, seedStr, _ := strings.Cut(arg, ":")
	id, err1 := strconv.ParseUint(idStr, 10, 64)
	seed, err2 := strconv.ParseUint(seedStr, 0, 8)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("bad region-fill argument %q", arg)
	}
	rr, err := c.Region(id)
	if err != nil {
		return nil, err
	}
	n, err := rr.WriteAt(pattern(rr.Len(), byte(seed)), 0)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "filled %d", n), nil
}

// grantRegion creates a region of pattern bytes and grants it to the client
// read-only.
func grantRegion(ctx context.Context, c *alpc.Conn, arg string) (*alpc.Region, []byte, error) {
	nStr, seedStr, _ := strings.Cut(arg, ":")
	n, err1 := strconv.Atoi(nStr)
	seed, err2 := strconv.ParseUint(seedStr, 0, 8)
	if err1 != nil || err2 != nil || n <= 0 || n > 64<<20 {
		return nil, nil, fmt.Errorf("bad grant-me argument %q", arg)
	}
	r, err := alpc.NewRegion(n)
	if err != nil {
		return nil, nil, err
	}
	fill(r.Bytes(), byte(seed))
	g, err := c.Grant(ctx, r, alpc.ReadOnly)
	if err != nil {
		_ = r.Close()
		return nil, nil, err
	}
	return r, fmt.Appendf(nil, "granted %d", g.ID()), nil
}

// podIP returns this pod's IP: $POD_IP (the downward API), else the first
// global IPv4 address.
func podIP() string {
	if ip := os.Getenv("POD_IP"); ip != "" {
		return ip
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}
