package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc"
)

type loadOptions struct {
	port, name                       string
	retry                            time.Duration
	servers                          int
	settle, interval, timeout, probe time.Duration
	probeFailuresOK                  bool
}

// load calls the server in a loop over one connection, reconnecting when it
// ends, while a second goroutine opens a fresh connection every probe
// interval; it stops once o.servers different server pods have answered
// and the last of them has kept answering for o.settle. It is the client
// side of a rolling update: it logs every failure and ends with a summary
// line ("load: summary ...") of how many calls and connects failed, why,
// and the longest time without a successful call. A call refused with
// alpc.ErrGoingAway (a draining server; never sent) is made again on a new
// connection and not counted as failed. It fails if a call failed with
// anything but peer-closed (the clear error of a server that went away), a
// reconnect failed with anything but "no server", or a new connection
// failed (unless o.probeFailuresOK).
func load(ctx context.Context, o loadOptions) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	conn, err := connect(ctx, o.port, o.name, o.retry, nil)
	if err != nil {
		return err
	}
	log.Printf("load: connected to %s; calling every %v until %d servers answered", o.port, o.interval, o.servers)

	var (
		probes, probeFails atomic.Int64
		probeMu            sync.Mutex
		probeErrs          = map[string]int{}
		wg                 sync.WaitGroup
	)
	probeCtx, stopProbe := context.WithCancel(ctx)
	probeLoop := func() {
		defer wg.Done()
		t := time.NewTicker(o.probe)
		defer t.Stop()
		for {
			select {
			case <-probeCtx.Done():
				return
			case <-t.C:
			}
			probes.Add(1)
			err := probeOnce(probeCtx, o.port, o.name+"-probe")
			if err != nil && probeCtx.Err() == nil {
				probeFails.Add(1)
				probeMu.Lock()
				probeErrs[errKind(err)]++
				probeMu.Unlock()
				log.Printf("load: new connection failed: %v", err)
			}
		}
	}
	if o.probe > 0 {
		wg.Add(1)
		go probeLoop()
	}

	var (
		calls, callFails, peerClosed, goingAway, connects, connectFails int
		otherErrs                                                       = map[string]int{}
		servers                                                         []string
		lastOK, lastNew                                                 time.Time
		longest                                                         time.Duration
		longestAt                                                       time.Time
	)
	current := ""
	for ctx.Err() == nil {
		if conn == nil {
			connects++
			c, err := alpc.Connect(ctx, o.port, []byte(o.name), nil)
			if err != nil {
				connectFails++
				if !errors.Is(err, alpc.ErrNoServer) && ctx.Err() == nil {
					otherErrs["connect: "+errKind(err)]++
				}
				log.Printf("load: reconnect failed: %v", err)
				sleep(ctx, 50*time.Millisecond)
				continue
			}
			conn = c
			log.Printf("load: reconnected: %s", c.AcceptMessage())
		}
		out, err := conn.Call(ctx, []byte("ping"))
		if errors.Is(err, alpc.ErrGoingAway) {
			// The server is draining (Conn.Shutdown): the call was not
			// sent; make it on a new connection.
			goingAway++
			log.Printf("load: %s is going away; reconnecting", current)
			_ = conn.Close()
			conn = nil
			continue
		}
		calls++
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			callFails++
			if errors.Is(err, alpc.ErrPeerClosed) {
				peerClosed++
			} else {
				otherErrs["call: "+errKind(err)]++
			}
			log.Printf("load: call %d to %s failed: %v; reconnecting", calls, current, err)
			_ = conn.Close()
			conn = nil
			continue
		}
		now := time.Now()
		if !lastOK.IsZero() && now.Sub(lastOK) > longest {
			longest, longestAt = now.Sub(lastOK), lastOK
		}
		lastOK = now
		current = strings.TrimPrefix(string(out), "pong from ")
		if !slices.Contains(servers, current) {
			servers = append(servers, current)
			lastNew = now
			log.Printf("load: server %s answered call %d", current, calls)
		}
		if len(servers) >= o.servers && now.Sub(lastNew) >= o.settle {
			break
		}
		sleep(ctx, o.interval)
	}
	stopProbe()
	wg.Wait()
	if conn != nil {
		_ = conn.Close()
	}
	probeMu.Lock()
	for k, v := range probeErrs {
		if !o.probeFailuresOK {
			otherErrs["new connection: "+k] += v
		}
	}
	probeMu.Unlock()
	log.Printf("load: summary calls=%d failed=%d peer-closed=%d going-away=%d reconnects=%d failed-reconnects=%d new-connections=%d failed-new-connections=%d longest-gap=%v (after %s) servers=%s other-errors=%d",
		calls, callFails, peerClosed, goingAway, connects, connectFails, probes.Load(), probeFails.Load(),
		longest.Round(time.Millisecond), longestAt.Format("15:04:05.000"), strings.Join(servers, ","), len(otherErrs))
	for k, v := range otherErrs {
		log.Printf("load: unexpected error (%d times): %s", v, k)
	}
	switch {
	case len(servers) < o.servers:
		return fmt.Errorf("only %d of %d servers answered before %v: %w", len(servers), o.servers, o.timeout, ctx.Err())
	case len(otherErrs) > 0:
		return fmt.Errorf("%d kinds of unexpected errors", len(otherErrs))
	}
	log.Printf("load: passed")
	return nil
}

// probeOnce opens a fresh connection, makes one call and closes it.
func probeOnce(ctx context.Context, port, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := alpc.Connect(ctx, port, []byte(name), nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Call(ctx, []byte("ping")); err != nil {
		return fmt.Errorf("first call on a new connection: %w", err)
	}
	return nil
}

// errKind is an error's message without what varies between occurrences
// (pod names and UIDs are kept; it is for counting).
func errKind(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
