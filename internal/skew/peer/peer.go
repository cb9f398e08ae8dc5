// Package peer is both ends of kalpc's library version-skew test
// (pkg/alpc/skew_test.go): one handler that serves every request either end
// sends, and one script of calls that exercises what the library offers
// (inline and section calls in both directions, callbacks, one-way
// messages, loans, direct access and remote errors), checking every answer.
//
// The test runs the script against the current library in its own process
// and, through cmd/kalpc-skew-peer built from the previous release's tree,
// against the previous release's. So this package must compile against the
// previous release's pkg/alpc (skew.PreviousRelease): use no API newer than
// that, and import nothing else of this module.
package peer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// Connection messages of the script's connections.
const (
	ClientMessage = "skew-client"
	AcceptMessage = "skew-server"
)

// ScriptOK is the reply to script: when the script passed.
const ScriptOK = "script ok"

// Sizes the script uses: inline (under alpc.DefaultInlineLimit, 63 KiB)
// and through sections (above it).
const (
	inlineSize  = 60 << 10
	sectionSize = 1<<20 + 3
	replySize   = 300_000
	regionSize  = 64 << 10
)

// regionMark is what the handler writes at the end of a region granted to
// it.
const regionMark = "written-by-peer!"

// Pattern returns n bytes that differ at every offset modulo 251.
func Pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return []byte(hex.EncodeToString(s[:]))
}

// Config returns the configuration both ends use: Handler(logf) and direct
// access allowed.
func Config(logf func(format string, args ...any)) *alpc.Config {
	return &alpc.Config{Handler: Handler(logf), AllowDirectAccess: true}
}

// Handler returns a handler serving the script's requests. A request is an
// operation, a colon and its argument:
//
//	echo:X        replies X
//	sum:X         replies X's SHA-256 in hex (X may be large)
//	big:N         replies Pattern(N)
//	callback:X    calls the caller back with echo:X and replies its answer
//	bigcallback:N calls the caller back with sum:Pattern(N), replies the answer
//	note:X        (one-way) records X for this connection
//	notes:        replies the notes recorded, sorted, comma-separated
//	region:ID     maps the caller's grant ID, replies the SHA-256 of its
//	              content and writes regionMark at its end
//	fail:X        fails with alpc.CodeInvalidArgument and message X
//	script:       runs Script towards the caller (its steps go to logf) and
//	              replies "script ok", or fails with what went wrong
//
// The one who connected runs Script, then asks for script:, so every
// request travels both ways.
func Handler(logf func(format string, args ...any)) alpc.Handler {
	var mu sync.Mutex
	notes := map[*alpc.Conn][]string{}
	return alpc.HandlerFunc(func(ctx context.Context, req *alpc.Request) ([]byte, error) {
		p := req.Payload()
		op, arg, ok := bytes.Cut(p, []byte(":"))
		if !ok {
			return nil, alpc.Errorf(alpc.CodeInvalidArgument, "no operation in a %d-byte request", len(p))
		}
		switch string(op) {
		case "echo":
			return arg, nil
		case "sum":
			return sum(arg), nil
		case "big":
			n, err := strconv.Atoi(string(arg))
			if err != nil || n < 0 || n > 64<<20 {
				return nil, alpc.Errorf(alpc.CodeInvalidArgument, "bad size %q", arg)
			}
			return Pattern(n), nil
		case "callback":
			return req.Conn().Call(ctx, append([]byte("echo:"), arg...))
		case "bigcallback":
			n, err := strconv.Atoi(string(arg))
			if err != nil || n < 0 || n > 64<<20 {
				return nil, alpc.Errorf(alpc.CodeInvalidArgument, "bad size %q", arg)
			}
			return req.Conn().Call(ctx, append([]byte("sum:"), Pattern(n)...))
		case "note":
			if !req.OneWay() {
				return nil, alpc.Errorf(alpc.CodeInvalidArgument, "note is one-way")
			}
			mu.Lock()
			c := req.Conn()
			if len(notes[c]) < 100 {
				notes[c] = append(notes[c], string(arg))
			}
			mu.Unlock()
			return nil, nil
		case "notes":
			mu.Lock()
			n := slices.Clone(notes[req.Conn()])
			mu.Unlock()
			slices.Sort(n)
			return []byte(strings.Join(n, ",")), nil
		case "region":
			id, err := strconv.ParseUint(string(arg), 10, 64)
			if err != nil {
				return nil, alpc.Errorf(alpc.CodeInvalidArgument, "bad region id %q", arg)
			}
			rr, err := req.Conn().Region(id)
			if err != nil {
				return nil, err
			}
			b := make([]byte, rr.Len())
			if _, err := rr.ReadAt(b, 0); err != nil {
				return nil, err
			}
			if _, err := rr.WriteAt([]byte(regionMark), int64(rr.Len()-len(regionMark))); err != nil {
				return nil, err
			}
			return sum(b), nil
		case "fail":
			return nil, alpc.Errorf(alpc.CodeInvalidArgument, "%s", arg)
		case "script":
			if err := Script(ctx, req.Conn(), logf); err != nil {
				return nil, alpc.Errorf(alpc.CodeInternal, "script towards the caller: %v", err)
			}
			return []byte(ScriptOK), nil
		}
		return nil, alpc.Errorf(alpc.CodeUnimplemented, "unknown operation %q", op)
	})
}

// Script runs every request of Handler's on c, whose peer serves them with
// Handler, and checks each answer. logf reports each step. The caller
// bounds it with ctx.
func Script(ctx context.Context, c *alpc.Conn, logf func(format string, args ...any)) error {
	call := func(step string, payload, want []byte) error {
		got, err := c.Call(ctx, payload)
		if err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s: got %d bytes %.40q, want %d bytes %.40q", step, len(got), got, len(want), want)
		}
		logf("%s: ok (%d bytes out, %d back)", step, len(payload), len(got))
		return nil
	}
	if err := call("inline echo", []byte("echo:hello across versions"), []byte("hello across versions")); err != nil {
		return err
	}
	in := Pattern(inlineSize)
	if err := call("inline 60 KiB", append([]byte("sum:"), in...), sum(in)); err != nil {
		return err
	}
	big := Pattern(sectionSize)
	if err := call("section 1 MiB request", append([]byte("sum:"), big...), sum(big)); err != nil {
		return err
	}
	if err := call("section 300 KB reply", fmt.Appendf(nil, "big:%d", replySize), Pattern(replySize)); err != nil {
		return err
	}
	if err := call("callback", []byte("callback:who calls"), []byte("who calls")); err != nil {
		return err
	}
	if err := call("section callback", fmt.Appendf(nil, "bigcallback:%d", replySize), sum(Pattern(replySize))); err != nil {
		return err
	}

	// One-way messages: their handlers may run in any order and after a
	// later call, so ask until both are there.
	for _, n := range []string{"1", "2"} {
		if err := c.Send(ctx, []byte("note:"+n)); err != nil {
			return fmt.Errorf("one-way send: %w", err)
		}
	}
	for {
		got, err := c.Call(ctx, []byte("notes:"))
		if err != nil {
			return fmt.Errorf("one-way notes: %w", err)
		}
		if string(got) == "1,2" {
			logf("one-way: ok")
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("one-way: the peer has notes %q, want 1,2: %w", got, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}

	// A loan: written in place, sent without a copy.
	loan, err := c.Loan(ctx, 4+sectionSize)
	if err != nil {
		return fmt.Errorf("loan: %w", err)
	}
	copy(loan.Bytes(), "sum:")
	copy(loan.Bytes()[4:], big)
	got, err := c.CallLoan(ctx, loan)
	if err != nil {
		return fmt.Errorf("loan call: %w", err)
	}
	if !bytes.Equal(got, sum(big)) {
		return fmt.Errorf("loan call: got %q, want %q", got, sum(big))
	}
	logf("loan: ok")

	// Direct access: grant a region, the peer reads it and writes its mark.
	r, err := alpc.NewRegion(regionSize)
	if err != nil {
		return fmt.Errorf("region: %w", err)
	}
	defer r.Close()
	content := Pattern(regionSize)
	copy(r.Bytes(), content)
	g, err := c.Grant(ctx, r, alpc.ReadWrite)
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	got, err = c.Call(ctx, fmt.Appendf(nil, "region:%d", g.ID()))
	if err != nil {
		return fmt.Errorf("granted region: %w", err)
	}
	if !bytes.Equal(got, sum(content)) {
		return fmt.Errorf("granted region: the peer read %q, want %q", got, sum(content))
	}
	if mark := r.Bytes()[regionSize-len(regionMark):]; string(mark) != regionMark {
		return fmt.Errorf("granted region: the peer's write is missing (%q)", mark)
	}
	if err := g.Revoke(ctx); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	logf("direct access: ok")

	// A handler's error reaches the caller with its code and message.
	_, err = c.Call(ctx, []byte("fail:as asked"))
	var re *alpc.RemoteError
	if !errors.As(err, &re) || re.Code != alpc.CodeInvalidArgument || re.Message != "as asked" {
		return fmt.Errorf("remote error: want invalid argument %q, got %w", "as asked", err)
	}
	logf("remote error: ok")
	return nil
}
