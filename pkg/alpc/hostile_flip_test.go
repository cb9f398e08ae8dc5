//go:build linux && !kalpc_stub

package alpc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

func init() {
	hostileHelpers["flipper"] = helperFlipper
}

const (
	flipSize = 256 << 10
	flipA    = 0xAA
	flipB    = 0x55
)

// helperFlipper ("path|requests") lends the port one sealed section and
// sends requests referencing all of it, one at a time, while a goroutine
// keeps rewriting every byte of the section, alternately all flipA and all
// flipB. Every byte ever in the section is flipA or flipB.
func helperFlipper(arg string) error {
	f, err := splitArg(arg, 2)
	if err != nil {
		return err
	}
	path, requests := f[0], atoi(f[1])
	fmt.Println("READY")
	fd, err := rawConnect(context.Background(), path, nil)
	if err != nil {
		return err
	}
	defer sys.Close(fd)
	mfd, err := sys.MemfdCreate("kalpc-section-flipped", flipSize)
	if err != nil {
		return err
	}
	defer sys.Close(mfd)
	mem, err := unix.Mmap(mfd, 0, flipSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	copy(mem, bytes.Repeat([]byte{flipA}, flipSize)) // every page written
	if err := sys.AddSeals(mfd, goodSeals); err != nil {
		return err
	}
	a, b := bytes.Repeat([]byte{flipA}, flipSize), bytes.Repeat([]byte{flipB}, flipSize)
	copy(mem, a)
	var stop atomic.Bool
	go func() {
		for !stop.Load() {
			copy(mem, b)
			copy(mem, a)
		}
	}()
	defer stop.Store(true)

	sec := wire.Header{Type: wire.TypeSection, ID: 1, NFDs: 1, Aux64: flipSize}
	hb := make([]byte, wire.HeaderSize)
	sec.Put(hb)
	if err := sys.Sendmsg(fd, hb, nil, []int{mfd}, sys.MsgNoSignal); err != nil {
		return err
	}
	rb := make([]byte, wire.SectionRefSize)
	ref := wire.SectionRef{Section: 1, Length: flipSize}
	ref.Put(rb)
	buf := make([]byte, wire.HeaderSize+DefaultInlineLimit)
	for id := uint64(1); id <= uint64(requests); id++ {
		if err := sys.Sendmsg(fd, header(wire.TypeRequest, wire.FlagSection, id, rb), nil, nil, sys.MsgNoSignal); err != nil {
			return err
		}
		for {
			n, _, _, err := sys.Recvmsg(fd, buf, nil, 0)
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("port hung up at request %d", id)
			}
			h, payload, err := wire.Parse(buf[:n])
			if err != nil {
				return err
			}
			if h.Type == wire.TypeRelease {
				continue // the buffer is ours again; we keep flipping it anyway
			}
			if h.Type != wire.TypeReply || h.ID != id {
				return fmt.Errorf("request %d answered with %v %d: %q", id, h.Type, h.ID, payload)
			}
			break
		}
	}
	return nil
}

// TestHostileByteFlipping: the sender keeps rewriting a section's bytes
// while the receiver reads them. Semantics checked (and documented in
// docs/security.md): Request.Payload's private copy is read once, byte by
// byte, from the peer's memory: every byte is one the peer wrote, the copy
// may mix bytes from before and after a concurrent write (it is not an
// atomic snapshot of the whole payload), and it never changes afterwards. A
// View reads the live memory: its bytes may change between two reads.
// Neither crashes the receiver, and other connections are unaffected.
func TestHostileByteFlipping(t *testing.T) {
	checkLeaks(t)
	baseMaps := sectionMaps(t)
	const requests = 200
	type verdict struct {
		view        bool
		foreign     int  // bytes that are neither flipA nor flipB
		mixed       bool // both values seen in one read
		copyChanged bool // the private copy changed after it was taken
		viewChanged bool // two reads of the View differed
	}
	verdicts := make(chan verdict, requests)
	path, conns, good, goodServer := listenWithGood(t, &Config{Handler: HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		// The good client's echo calls are inline; the flipper's requests
		// are in its section: odd ids are read with Payload, even with View.
		echo := func(b []byte) ([]byte, error) { return bytes.TrimPrefix(b, []byte("echo:")), nil }
		var v verdict
		// count reads b once (a View's bytes change under it: counting
		// each value in its own pass would see different bytes).
		count := func(b []byte) (foreign int, mixed bool) {
			var na, nb int
			for _, c := range b {
				switch c {
				case flipA:
					na++
				case flipB:
					nb++
				default:
					foreign++
				}
			}
			return foreign, na > 0 && nb > 0
		}
		if r.ID()%2 == 0 {
			v.view = true
			view := r.View()
			if !view.Shared() {
				defer view.Release()
				return echo(view.Bytes())
			}
			first := sha256.Sum256(view.Bytes())
			v.foreign, v.mixed = count(view.Bytes())
			v.viewChanged = sha256.Sum256(view.Bytes()) != first
			view.Release()
		} else {
			p := r.Payload()
			if bytes.HasPrefix(p, []byte("echo:")) {
				return echo(p)
			}
			v.foreign, v.mixed = count(p)
			first := sha256.Sum256(p)
			time.Sleep(time.Millisecond) // the sender goes on writing
			v.copyChanged = sha256.Sum256(p) != first
		}
		verdicts <- v
		return []byte("ok"), nil
	})}, nil, 2)
	g := startGoodTraffic(t, good)
	startHelper(t, "flipper", fmt.Sprintf("%s|%d", path, requests))
	server := <-conns
	defer server.Close()
	var mixedCopies, mixedViews, changedViews int
	for i := range requests {
		var v verdict
		select {
		case v = <-verdicts:
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d of %d requests reached the handler", i, requests)
		}
		switch {
		case v.foreign > 0:
			t.Fatalf("read %d bytes the sender never wrote", v.foreign)
		case v.copyChanged:
			t.Fatal("Request.Payload's private copy changed after it was taken")
		}
		if v.view {
			if v.mixed {
				mixedViews++
			}
			if v.viewChanged {
				changedViews++
			}
		} else if v.mixed {
			mixedCopies++
		}
	}
	select {
	case <-server.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the flipper's connection did not end")
	}
	if err := server.Err(); err != ErrPeerClosed {
		t.Errorf("the flipper's connection ended with %v; want ErrPeerClosed (it only wrote its own memory)", err)
	}
	g.finish(t, 10, 50*time.Millisecond)
	t.Logf("%d requests: %d of %d copies mixed old and new bytes; %d of %d views mixed them, %d changed between two reads",
		requests, mixedCopies, requests/2, mixedViews, requests/2, changedViews)
	server.Close()
	good.Close()
	goodServer.Close()
	deadline := time.Now().Add(3 * time.Second)
	for sectionMaps(t) > baseMaps && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := sectionMaps(t); n > baseMaps {
		t.Errorf("%d section mappings left (baseline %d)", n, baseMaps)
	}
}
