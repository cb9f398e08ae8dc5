package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"strconv"
	"strings"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc"
)

type clientOptions struct {
	port, name string
	size       int
	retry      time.Duration
	hold       bool
	compare    bool
}

// connect connects to port, retrying for up to retry while the server is
// not published yet (or the sidecar not up yet).
func connect(ctx context.Context, port, name string, retry time.Duration, cfg *alpc.Config) (*alpc.Conn, error) {
	deadline := time.Now().Add(retry)
	for {
		conn, err := alpc.Connect(ctx, port, []byte(name), cfg)
		if err == nil {
			return conn, nil
		}
		retryable := errors.Is(err, alpc.ErrNoServer) || errors.Is(err, alpc.ErrBrokerUnavailable)
		if !retryable || time.Now().After(deadline) {
			return nil, fmt.Errorf("connect %s: %w", port, err)
		}
		log.Printf("client: %v; retrying", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func hashOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func client(ctx context.Context, o clientOptions) error {
	cfg := &alpc.Config{
		Handler: alpc.HandlerFunc(func(ctx context.Context, req *alpc.Request) ([]byte, error) {
			log.Printf("client: server called back: %q", req.Payload())
			return []byte(o.name), nil
		}),
		AllowDirectAccess: true,
	}
	conn, err := connect(ctx, o.port, o.name, o.retry, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	log.Printf("client: pod %s connected to %s; server said %q", hostname(), o.port, conn.AcceptMessage())

	failed := 0
	check := func(what string, ok bool, detail string) {
		status := "PASS"
		if !ok {
			status = "FAIL"
			failed++
		}
		log.Printf("%s %s: %s", status, what, detail)
	}
	size := o.size

	// Inline: a small message copied through the socket queue.
	out, err := conn.Call(ctx, []byte("ping"))
	check("inline", err == nil && strings.HasPrefix(string(out), "pong from "), fmt.Sprintf("call(ping) = %q, err %v", out, err))

	// Section: a large request goes into a sealed memfd; the server hashes
	// it in place (a View of the client's section).
	big := pattern(size, 0xa5)
	want := fmt.Sprintf("%s len:%d shared:true", hashOf(big), size)
	start := time.Now()
	out, err = conn.Call(ctx, big)
	check("section request", err == nil && string(out) == want,
		fmt.Sprintf("sent %d B, server hashed %q (want %q) in %v, err %v", size, out, want, time.Since(start).Round(time.Microsecond), err))

	// Section: a large reply, checked byte for byte.
	start = time.Now()
	out, err = conn.Call(ctx, fmt.Appendf(nil, "blob:%d", size))
	check("section reply", err == nil && bytes.Equal(out, pattern(size, 0x5a)),
		fmt.Sprintf("received %d B (want %d) in %v, err %v", len(out), size, time.Since(start).Round(time.Microsecond), err))

	// Loan: the client writes straight into its shared-memory section and
	// sends that buffer without a copy; the server hashes it in place.
	checkLoan(ctx, conn, size, check)

	// Direct access: regions granted for in-place reads and writes.
	checkDirectAccess(ctx, conn, check)

	// Callback: the server calls the client while the client's call waits.
	out, err = conn.Call(ctx, []byte("shout:hello kalpc"))
	wantShout := "HELLO KALPC, " + o.name + "!"
	check("callback", err == nil && string(out) == wantShout, fmt.Sprintf("call(shout) = %q (want %q), err %v", out, wantShout, err))

	// Separate network namespaces: nothing here goes through a network.
	out, err = conn.Call(ctx, []byte("netns"))
	mine := netns()
	check("separate network namespaces", err == nil && len(out) > 0 && string(out) != mine,
		fmt.Sprintf("server %q, client %q, err %v", out, mine, err))

	// Round trips.
	const n = 2000
	payload := make([]byte, 64)
	start = time.Now()
	for range n {
		if _, err := conn.Call(ctx, payload); err != nil {
			return err
		}
	}
	el := time.Since(start)
	log.Printf("client: %d round trips of 64 B in %v (%.1f µs each)", n, el.Round(time.Millisecond), float64(el.Microseconds())/n)

	if failed > 0 {
		return fmt.Errorf("k8s-echo: %d checks failed", failed)
	}
	log.Printf("k8s-echo: all checks passed")
	if o.compare {
		if err := compare(ctx, conn); err != nil {
			return fmt.Errorf("compare: %w", err)
		}
	}
	if o.hold {
		log.Printf("client: holding the connection until the server ends it")
		select {
		case <-conn.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
		err := conn.Err()
		check("peer closed", errors.Is(err, alpc.ErrPeerClosed), fmt.Sprint(err))
		if failed > 0 {
			return errors.New("k8s-echo: the connection did not end with peer-closed")
		}
	}
	return nil
}

// checkLoan sends a loaned section buffer with CallLoan.
func checkLoan(ctx context.Context, conn *alpc.Conn, size int, check func(string, bool, string)) {
	l, err := conn.Loan(ctx, size)
	if err != nil {
		check("loan", false, fmt.Sprintf("Loan(%d): %v", size, err))
		return
	}
	fill(l.Bytes(), 0x3c) // written in place: this is the shared memory the server reads
	want := fmt.Sprintf("%s len:%d shared:true", hashOf(pattern(size, 0x3c)), size)
	start := time.Now()
	out, err := conn.CallLoan(ctx, l)
	check("loan", err == nil && string(out) == want,
		fmt.Sprintf("CallLoan of %d B filled in place: server hashed %q (want %q) in %v, err %v", size, out, want, time.Since(start).Round(time.Microsecond), err))
}

// checkDirectAccess grants the server a read-only and a read-write region,
// and takes a read-only region from it, checking every byte that crosses.
func checkDirectAccess(ctx context.Context, conn *alpc.Conn, check func(string, bool, string)) {
	const n = 1 << 20
	if !conn.Limits().DirectAccess {
		check("direct access", false, "not negotiated: the ConnectionPort needs messagePolicy.directAccess: true")
		return
	}

	// Read-only: the server reads the client's region in place, and cannot
	// write it.
	ro, err := alpc.NewRegion(n)
	if err != nil {
		check("direct access read-only", false, err.Error())
		return
	}
	defer ro.Close()
	fill(ro.Bytes(), 0x11)
	g, err := conn.Grant(ctx, ro, alpc.ReadOnly)
	if err != nil {
		check("direct access read-only", false, fmt.Sprintf("Grant: %v", err))
		return
	}
	readReply := func() string {
		out, err := conn.Call(ctx, fmt.Appendf(nil, "region-read:%d", g.ID()))
		if err != nil {
			return "error: " + err.Error()
		}
		return string(out)
	}
	want := fmt.Sprintf("%s len:%d access:read-only write:refused", hashOf(ro.Bytes()), n)
	out := readReply()
	check("direct access read-only", out == want, fmt.Sprintf("server read grant %d: %q (want %q)", g.ID(), out, want))

	// The owner writes in place; the server sees the change with no data
	// message in between: it is the same memory.
	fill(ro.Bytes(), 0x22)
	want = fmt.Sprintf("%s len:%d access:read-only write:refused", hashOf(ro.Bytes()), n)
	out = readReply()
	check("direct access read-only, live", out == want, fmt.Sprintf("after the client rewrote its region: %q (want %q)", out, want))

	// Revoked: the server's mapping is gone.
	if err := g.Revoke(ctx); err != nil {
		check("direct access revoke", false, fmt.Sprintf("Revoke: %v", err))
	} else {
		out = readReply()
		check("direct access revoke", strings.Contains(out, "region not granted"), fmt.Sprintf("server read after revoke: %q", out))
	}

	// Read-write: the server fills the client's region in place.
	rw, err := alpc.NewRegion(n)
	if err != nil {
		check("direct access read-write", false, err.Error())
		return
	}
	defer rw.Close()
	g, err = conn.Grant(ctx, rw, alpc.ReadWrite)
	if err != nil {
		check("direct access read-write", false, fmt.Sprintf("Grant: %v", err))
		return
	}
	o, err := conn.Call(ctx, fmt.Appendf(nil, "region-fill:%d:0x33", g.ID()))
	check("direct access read-write", err == nil && string(o) == fmt.Sprintf("filled %d", n) && bytes.Equal(rw.Bytes(), pattern(n, 0x33)),
		fmt.Sprintf("server filled grant %d: %q, err %v; region now %s (want %s)", g.ID(), o, err, hashOf(rw.Bytes()), hashOf(pattern(n, 0x33))))

	// The other way: the server grants the client a read-only region.
	o, err = conn.Call(ctx, fmt.Appendf(nil, "grant-me:%d:0x44", n))
	if err != nil {
		check("direct access from the server", false, fmt.Sprintf("grant-me: %v", err))
		return
	}
	id, perr := strconv.ParseUint(strings.TrimPrefix(string(o), "granted "), 10, 64)
	rr, err := conn.Region(id)
	if perr != nil || err != nil {
		check("direct access from the server", false, fmt.Sprintf("server said %q; Region: %v", o, err))
		return
	}
	got := make([]byte, rr.Len())
	_, rerr := rr.ReadAt(got, 0)
	_, werr := rr.WriteAt([]byte{1}, 0)
	check("direct access from the server", rerr == nil && bytes.Equal(got, pattern(n, 0x44)) && rr.Access() == alpc.ReadOnly && errors.Is(werr, alpc.ErrReadOnly),
		fmt.Sprintf("grant %d (%v): read %d B %s (want %s), err %v; write: %v", id, rr.Access(), len(got), hashOf(got), hashOf(pattern(n, 0x44)), rerr, werr))
}
