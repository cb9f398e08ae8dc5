//go:build linux && !kalpc_stub

package alpc

// Hostile peers that the port admits and that stay inside every limit of
// their own connection, yet try to make the victim hold more than it can:
// mappings across connections, memory charged to the victim's cgroup,
// copies of one buffer, sections still in use, granted regions, replies
// never released. One test per threat; each checks the victim survives,
// its resources return to the baseline, and a good connection's p99.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

func init() {
	hostileHelpers["section-flooder"] = helperSectionFlooder
	hostileHelpers["victim"] = helperVictim
}

// sectionMsg is a section announcement for a section of size bytes.
func sectionMsg(id, size uint64) []byte {
	h := wire.Header{Type: wire.TypeSection, ID: id, NFDs: 1, Aux64: size}
	b := make([]byte, wire.HeaderSize)
	h.Put(b)
	return b
}

// refRequest is a request whose payload is [off, off+n) of section sec.
func refRequest(id uint64, sec uint32, off, n uint64) []byte {
	r := wire.SectionRef{Section: sec, Offset: off, Length: n}
	b := make([]byte, wire.SectionRefSize)
	r.Put(b)
	return header(wire.TypeRequest, wire.FlagSection, id, b)
}

// populatedMemfd makes a memfd of size bytes, every page written, sealed
// as a well-formed section (or only with seals, if not zero).
func populatedMemfd(size int64, seals int) (int, error) {
	fd, err := sys.MemfdCreate("kalpc-section-hostile", size)
	if err != nil {
		return -1, err
	}
	mem, err := sys.MmapPopulate(fd, int(size), sys.ProtRead|sys.ProtWrite)
	if err != nil {
		sys.Close(fd)
		return -1, err
	}
	_ = sys.Munmap(mem)
	if seals == 0 {
		seals = goodSeals
	}
	if err := sys.AddSeals(fd, seals); err != nil {
		sys.Close(fd)
		return -1, err
	}
	return fd, nil
}

// helperSectionFlooder ("path|conns|sections|distinct|statsfile") opens
// conns connections to the port and sends sections section messages on
// each, all of one sealed 4 KiB memfd or (distinct=1) each its own, keeping
// every connection open until stdin closes. It reports how many sections
// were sent and how many connections the port ended.
func helperSectionFlooder(arg string) error {
	f, err := splitArg(arg, 5)
	if err != nil {
		return err
	}
	path, nconns, nsections, distinct, stats := f[0], atoi(f[1]), atoi(f[2]), f[3] == "1", f[4]
	fmt.Println("READY")
	shared, err := populatedMemfd(4096, 0)
	if err != nil {
		return err
	}
	defer sys.Close(shared)
	var fds []int
	defer func() { sys.CloseAll(fds) }()
	sent := 0
	hungUp := map[int]bool{}
	for range nconns {
		fd, err := rawConnect(context.Background(), path, nil)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
		for i := range nsections {
			mfd := shared
			if distinct {
				if mfd, err = populatedMemfd(4096, 0); err != nil {
					return err
				}
			}
			err := sys.Sendmsg(fd, sectionMsg(uint64(i+1), 4096), nil, []int{mfd}, sys.MsgNoSignal)
			if distinct {
				sys.Close(mfd)
			}
			if err != nil {
				hungUp[fd] = true // the port hung up
				break
			}
			sent++
		}
	}
	// Wait for the port to have read everything: a connection it ended
	// shows as a hang-up.
	time.Sleep(500 * time.Millisecond)
	for _, fd := range fds {
		var buf [64]byte
		if n, _, _, err := sys.Recvmsg(fd, buf[:], nil, sys.MsgDontWait); n == 0 && err == nil {
			hungUp[fd] = true
		}
	}
	if err := writeStats(stats, "sent=%d ended=%d", sent, len(hungUp)); err != nil {
		return err
	}
	_, _ = os.Stdin.Read(make([]byte, 1)) // hold the connections until the test ends
	return nil
}

// TestHostileMapExhaustion: the per-connection section cap used to be the
// only bound on mappings, so one 4 KiB memfd sent as 4,096 sections on
// each of 16 connections exhausted vm.max_map_count and the victim died in
// the Go runtime. Now sections of one file share a mapping, a connection
// maps at most maxSections, and the process at most
// ProcessLimits.MaxMappings: past it, the connection that asks for more is
// ended with a protocol error naming the limit.
func TestHostileMapExhaustion(t *testing.T) {
	checkLeaks(t)
	baseMaps := sectionMaps(t)
	l, path := listenTest(t, &Config{MaxSectionBytes: 64 << 20, Handler: HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		return bytes.TrimPrefix(r.Payload(), []byte("echo:")), nil
	})})
	// The most mappings the process held at once during the attacks.
	peak := make(chan int)
	stopPeak := make(chan struct{})
	go func() {
		most := 0
		for {
			most = max(most, GetProcessUsage().Mappings)
			select {
			case <-stopPeak:
				peak <- most
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	readPeak := func() int { stopPeak <- struct{}{}; p := <-peak; return p }
	conns := make(chan *Conn, 1024)
	go acceptInto(l, conns)
	good, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	goodServer := <-conns
	defer goodServer.Close()
	g := startGoodTraffic(t, good)

	t.Run("one file as 4096 sections on 16 connections", func(t *testing.T) {
		stats := filepath.Join(t.TempDir(), "stats")
		h := startHelper(t, "section-flooder", fmt.Sprintf("%s|16|4096|0|%s", path, stats))
		got := waitForFile(t, stats, 60*time.Second)
		drainServers(t, conns, 16, "peer exceeded 256 sections")
		most := readPeak()
		t.Logf("flooder: %s; victim held at most %d mappings for %d sections of one file", got, most, 16*maxSections)
		if !strings.Contains(got, "ended=16") {
			t.Errorf("flooder %s: every connection should have been ended at %d sections", got, maxSections)
		}
		if most > 1 {
			t.Errorf("one file sent %d times was mapped %d times at once; want once", 16*maxSections, most)
		}
		_ = h.stdin.Close()
	})
	t.Run("distinct files past the process limit", func(t *testing.T) {
		old := GetProcessLimits()
		defer SetProcessLimits(old)
		if err := SetProcessLimits(ProcessLimits{MaxMappings: 1000}); err != nil {
			t.Fatal(err)
		}
		stats := filepath.Join(t.TempDir(), "stats")
		h := startHelper(t, "section-flooder", fmt.Sprintf("%s|6|%d|1|%s", path, maxSections, stats))
		got := waitForFile(t, stats, 60*time.Second)
		u := GetProcessUsage()
		t.Logf("flooder: %s; victim usage %+v", got, u)
		if u.Mappings > 1000 {
			t.Errorf("process holds %d mappings; limit 1000", u.Mappings)
		}
		if n := sectionMaps(t) - baseMaps; n > 1000 {
			t.Errorf("/proc/self/maps shows %d section mappings; limit 1000", n)
		}
		drainServers(t, conns, 6, "")
		_ = h.stdin.Close()
		waitWithin(t, 5*time.Second, func() bool { return GetProcessUsage().Mappings == 0 }, "mappings to be released")
	})
	g.finish(t, 10, 50*time.Millisecond)
	good.Close()
	goodServer.Close()
	waitWithin(t, 5*time.Second, func() bool { return sectionMaps(t) == baseMaps }, "the process's section mappings to return to the baseline")
}

// drainServers takes n server Conns and closes them; if wants is set, each
// must have ended with a protocol error containing it, and at least one
// with "MaxMappings" when it is empty.
func drainServers(t *testing.T, conns <-chan *Conn, n int, wants string) {
	t.Helper()
	limited := 0
	for i := range n {
		var c *Conn
		select {
		case c = <-conns:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d connections arrived", i, n)
		}
		if wants != "" {
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("connection %d was not ended", i)
			}
			if err := c.Err(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), wants) {
				t.Errorf("connection %d ended with %v; want a protocol error containing %q", i, err, wants)
			}
		} else if err := c.Err(); err != nil && strings.Contains(err.Error(), "MaxMappings") {
			limited++
		}
		c.Close()
	}
	if wants == "" && limited == 0 {
		t.Errorf("no connection was refused for ProcessLimits.MaxMappings")
	}
}

// waitWithin waits up to d for cond, failing the test naming what it
// waited for.
func waitWithin(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// regionMaps counts this process's mappings of regions (its own and
// granted ones).
func regionMaps(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("memfd:kalpc-region"))
}

// memCgroup makes a memory cgroup (v1 or v2) under this process's own,
// limited to limit bytes, and returns the file a process writes its pid
// to in order to join it, and a function reading its charged memory. It
// skips the test where no memory cgroup can be made (not root, no
// controller).
func memCgroup(t *testing.T, limit int64) (procs string, usage func() int64) {
	t.Helper()
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	var dir, limitFile, usageFile string
	for line := range strings.Lines(string(self)) {
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(f) == 3 && strings.Contains(","+f[1]+",", ",memory,") {
			dir, limitFile, usageFile = "/sys/fs/cgroup/memory"+f[2], "memory.limit_in_bytes", "memory.usage_in_bytes"
		}
	}
	if dir == "" {
		for line := range strings.Lines(string(self)) {
			if p, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
				dir, limitFile, usageFile = "/sys/fs/cgroup"+p, "memory.max", "memory.current"
			}
		}
	}
	if dir == "" {
		t.Skip("no memory cgroup controller")
	}
	dir = filepath.Join(dir, fmt.Sprintf("kalpc-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a memory cgroup: %v", err)
	}
	t.Cleanup(func() {
		// The victim has exited by now (helpers' cleanups run first).
		deadline := time.Now().Add(5 * time.Second)
		for os.Remove(dir) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		t.Skipf("cannot limit a memory cgroup: %v", err)
	}
	return filepath.Join(dir, "cgroup.procs"), func() int64 {
		b, err := os.ReadFile(filepath.Join(dir, usageFile))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return n
	}
}

// helperVictim ("path|procsfile") joins the cgroup whose procs file it is
// given, then serves the port at path with 64 MiB section and message
// limits: each call is answered with the length of its payload after
// reading every page of it in place ("echo:x" with x). Reading in place
// (a View) instead of copying keeps the victim's own heap out of its
// cgroup's usage, so what the test sees is what peers' pages cost it.
func helperVictim(arg string) error {
	f, err := splitArg(arg, 2)
	if err != nil {
		return err
	}
	if err := os.WriteFile(f[1], []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("joining the cgroup: %w", err)
	}
	l, err := Listen(f[0], &Config{MaxSectionBytes: 64 << 20, MaxMessageSize: 64 << 20, Handler: HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		v := r.View()
		defer v.Release()
		b := v.Bytes()
		if p, ok := bytes.CutPrefix(b, []byte("echo:")); ok {
			return bytes.Clone(p), nil // a probe's call
		}
		var sum byte
		for i := 0; i < len(b); i += 4096 {
			sum += b[i] // read every page in place
		}
		return []byte(strconv.Itoa(len(b))), nil
	})})
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		for {
			req, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			_, _ = req.Accept(nil)
		}
	}()
	fmt.Println("READY")
	_, _ = os.Stdin.Read(make([]byte, 1))
	return nil
}

// TestHostileSparseSectionCharge: copying a payload out of a peer's sparse
// memfd used to allocate its pages in the receiver's memory cgroup, and
// the charge stayed while the peer kept the file open (40 rounds of 32 MiB
// charged 1,352 MiB to a victim using 132 MiB, and OOM-killed it under a
// 512 MiB limit). Now a section with a page missing is refused before it
// is read, and a well-formed section's pages stay charged to its sender.
func TestHostileSparseSectionCharge(t *testing.T) {
	procs, usage := memCgroup(t, 512<<20)
	path := filepath.Join(t.TempDir(), "victim.sock")
	victim := startHelper(t, "victim", path+"|"+procs)
	good, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	probe, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	g := startGoodTraffic(t, probe)
	base := usage()
	const size = 32 << 20
	var kept []int // the attacker keeps every file open
	defer func() { sys.CloseAll(kept) }()
	for round := range 40 {
		// Sparse: sealed like a section, never written.
		mfd, err := sys.MemfdCreate("kalpc-section-sparse", size)
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, mfd)
		if err := sys.AddSeals(mfd, goodSeals); err != nil {
			t.Fatal(err)
		}
		fd := rawDial(t, path)
		if err := sys.Sendmsg(fd, sectionMsg(1, size), nil, []int{mfd}, sys.MsgNoSignal); err != nil {
			t.Fatal(err)
		}
		_ = sys.Sendmsg(fd, refRequest(1, 1, 0, size), nil, nil, sys.MsgNoSignal)
		// The victim must hang up (refusing the section), not answer.
		if answered := readUntilHangup(t, fd, 5*time.Second); answered {
			t.Fatalf("round %d: the victim read a sparse section", round)
		}
		sys.Close(fd)
	}
	afterSparse := usage()
	g.finish(t, 10, 50*time.Millisecond)
	// Well-formed traffic: the sender (this process) pays for its sections.
	payload := bytes.Repeat([]byte{7}, size)
	for range 10 {
		out, err := good.Call(t.Context(), payload)
		if err != nil || string(out) != strconv.Itoa(size) {
			t.Fatalf("good call: %q, %v", out, err)
		}
	}
	afterGood := usage()
	t.Logf("victim cgroup: %d MiB at baseline, %d MiB after 40 sparse rounds of 32 MiB, %d MiB after 10 good 32 MiB calls", base>>20, afterSparse>>20, afterGood>>20)
	// One sparse section read would be 32 MiB.
	if afterSparse-base > 24<<20 {
		t.Errorf("sparse sections charged %d MiB to the victim", (afterSparse-base)>>20)
	}
	// The sender's pages, read in place, stay charged to the sender.
	if afterGood-afterSparse > 24<<20 {
		t.Errorf("good calls left %d MiB charged to the victim", (afterGood-base)>>20)
	}
	if _, err := good.Call(t.Context(), []byte("still alive")); err != nil {
		t.Fatalf("victim after the attack: %v", err)
	}
	_ = victim
}

// readUntilHangup reads fd until the peer hangs up (false) or sends a reply
// or error (true), for at most d.
func readUntilHangup(t *testing.T, fd int, d time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	buf := make([]byte, 1<<16)
	for time.Now().Before(deadline) {
		n, _, _, err := sys.Recvmsg(fd, buf, nil, sys.MsgDontWait)
		switch {
		case errors.Is(err, sys.EAGAIN):
			time.Sleep(5 * time.Millisecond)
			continue
		case err != nil || n == 0:
			return false
		}
		if h, _, err := wire.Parse(buf[:n]); err == nil && (h.Type == wire.TypeReply || h.Type == wire.TypeError) {
			return true
		}
	}
	t.Fatalf("the victim neither answered nor hung up within %v", d)
	return false
}

// TestHostileCopyAmplification: a peer used to be able to reference one
// region of its section from any number of calls, making each handler
// copy it (one 16 MiB section referenced by 100 calls grew the victim's
// heap to 1,456 MiB; 4 MiB here keeps a -race run's copies short). A region is now lent once at a time: a second
// reference to lent bytes ends the connection, and a copied payload stays
// lent until its handler returns.
func TestHostileCopyAmplification(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	path, conns, good, _ := listenWithGood(t, &Config{MaxSectionBytes: 64 << 20, Handler: HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		p := r.Payload()
		if len(p) > 1<<20 {
			select { // hold the copy, as a slow handler would
			case <-release:
			case <-ctx.Done():
			}
		}
		return bytes.TrimPrefix(p, []byte("echo:")), nil
	})}, nil, 4)
	g := startGoodTraffic(t, good)
	baseHeap := heapInUse()
	res := sampleResources()
	const size = 4 << 20
	steps := []hostileStep{{sectionMsg(1, size), func() int { return sectionFD(t, size, goodSeals) }}}
	for i := range 100 {
		steps = append(steps, hostileStep{refRequest(uint64(i+1), 1, 0, size), nil})
	}
	attack(t, path, conns, steps, "overlaps")
	close(release)
	_, _, maxHeap := res.finish()
	t.Logf("victim heap: %d MiB before, at most %d MiB during 100 references to one 4 MiB buffer", baseHeap>>20, maxHeap>>20)
	if maxHeap > baseHeap+3*size {
		t.Errorf("heap grew to %d MiB (baseline %d MiB)", maxHeap>>20, baseHeap>>20)
	}
	g.finish(t, 10, 50*time.Millisecond)
}

// TestHostileSectionBudget: MaxSectionBytes was not a bound. A drop
// message subtracted a section from the budget while queued calls still
// held its mapping (100 × 32 MiB mapped against 64 MiB), and granted
// regions were outside the budget. Now a drop of a section still lent is a
// protocol error, a section counts until it is unmapped, and grants count
// too.
func TestHostileSectionBudget(t *testing.T) {
	checkLeaks(t)
	baseMapped := sectionBytesMapped(t)
	hold := make(chan struct{})
	defer close(hold)
	path, conns, good, _ := listenWithGood(t, &Config{MaxSectionBytes: 64 << 20, AllowDirectAccess: true, Handler: HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		v := r.View()
		defer v.Release()
		if v.Len() > 1<<20 {
			select {
			case <-hold:
			case <-ctx.Done():
			}
			return []byte("ok"), nil
		}
		return bytes.TrimPrefix(bytes.Clone(v.Bytes()), []byte("echo:")), nil
	})}, nil, 4)
	g := startGoodTraffic(t, good)
	const size = 32 << 20
	t.Run("drop of a section still lent", func(t *testing.T) {
		var steps []hostileStep
		for i := range 100 {
			id := uint64(i + 1)
			steps = append(steps,
				hostileStep{sectionMsg(id, size), func() int { return sectionFD(t, size, goodSeals) }},
				hostileStep{refRequest(id, uint32(id), 0, size), nil},
				hostileStep{header(wire.TypeDrop, 0, id, nil), nil})
		}
		attack(t, path, conns, steps, "drop of section 1 while 1 of its buffers are still lent")
	})
	t.Run("grants count against MaxSectionBytes", func(t *testing.T) {
		fd := directDial(t, path)
		defer sys.Close(fd)
		server := <-conns
		defer server.Close()
		for i := range 3 {
			mfd := sectionFD(t, size, sys.SealShrink|sys.SealGrow|sys.SealFutureWrite)
			h := wire.Header{Type: wire.TypeGrant, ID: uint64(i + 1), NFDs: 1, Aux32: uint32(ReadOnly), Aux64: size}
			b := make([]byte, wire.HeaderSize)
			h.Put(b)
			err := sys.Sendmsg(fd, b, nil, []int{mfd}, sys.MsgNoSignal)
			sys.Close(mfd)
			if err != nil {
				break
			}
		}
		select {
		case <-server.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("a third 32 MiB grant against a 64 MiB budget was accepted")
		}
		if err := server.Err(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "exceeded MaxSectionBytes") {
			t.Fatalf("server ended with %v; want MaxSectionBytes exceeded", err)
		}
	})
	g.finish(t, 10, 50*time.Millisecond)
	waitWithin(t, 5*time.Second, func() bool { return sectionBytesMapped(t) <= baseMapped+minSectionSize }, "mapped section bytes to return to the baseline")
}

// directDial is rawDial announcing direct access and sections.
func directDial(t *testing.T, path string) int {
	t.Helper()
	p := hostileParams
	p.Features |= wire.FeatureDirectAccess
	fd, err := rawConnectParams(t.Context(), path, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestHostileNeverReleases: a client that reads its answers but never
// releases the section buffers they came in used to pin every handler
// waiting for section space, with no deadline (WriteTimeout never fired),
// and the replies they held stayed in the heap until it disconnected. Now
// the wait ends after WriteTimeout: the reply becomes a
// CodeResourceExhausted error and the handler is free.
func TestHostileNeverReleases(t *testing.T) {
	checkLeaks(t)
	path, conns, good, _ := listenWithGood(t, &Config{MaxSectionBytes: 16 << 20, WriteTimeout: time.Second, MaxConcurrentHandlers: 8, Handler: testHandler(nil)}, nil, 4)
	g := startGoodTraffic(t, good)

	fd, err := rawConnect(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close(fd)
	server := <-conns
	defer server.Close()
	const calls = 20
	for i := range calls {
		if err := sys.Sendmsg(fd, header(wire.TypeRequest, 0, uint64(i+1), []byte("big:2097152")), nil, nil, sys.MsgNoSignal); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	replies, refused := 0, 0
	buf := make([]byte, 1<<16)
	oob := make([]byte, sys.OOBSpace(wire.MaxFDs))
	for replies+refused < calls {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("after %v: %d replies and %d refusals of %d calls; handlers are stuck", time.Since(start), replies, refused, calls)
		}
		n, oobn, _, err := sys.Recvmsg(fd, buf, oob, sys.MsgDontWait)
		if errors.Is(err, sys.EAGAIN) {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err != nil || n == 0 {
			t.Fatalf("victim hung up: %v", err)
		}
		if fds, _ := sys.ParseRights(oob[:oobn]); len(fds) > 0 {
			sys.CloseAll(fds) // sections: never released
		}
		h, payload, err := wire.Parse(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		switch h.Type {
		case wire.TypeReply:
			replies++
		case wire.TypeError:
			if Code(h.Aux32) != CodeResourceExhausted || !strings.Contains(string(payload), "released too little shared memory within WriteTimeout") {
				t.Errorf("error reply %v %q", Code(h.Aux32), payload)
			}
			refused++
		}
	}
	t.Logf("%d replies in sections, %d refused after WriteTimeout, all within %v", replies, refused, time.Since(start).Round(time.Millisecond))
	if replies == 0 || refused == 0 {
		t.Errorf("want some replies (up to the 16 MiB budget) and the rest refused; got %d and %d", replies, refused)
	}
	server.mu.Lock()
	running := server.sched.running
	server.mu.Unlock()
	if running > 1 {
		t.Errorf("%d handlers still running after every call was answered", running)
	}
	g.finish(t, 10, 50*time.Millisecond)
}

// TestRemoteRegionRevokedDuringUse: RemoteRegion.Bytes handed out the
// mapping itself, so a peer that revoked the grant (or hung up) while it
// was read crashed the reader with SIGSEGV. Use lends the mapping for the
// length of a function; a revocation meanwhile replaces it with zeros.
func TestRemoteRegionRevokedDuringUse(t *testing.T) {
	checkLeaks(t)
	baseMaps := regionMaps(t)
	for _, end := range []string{"revoke", "hang-up"} {
		t.Run(end, func(t *testing.T) {
			l, path := listenTest(t, &Config{AllowDirectAccess: true})
			conns := make(chan *Conn, 1)
			go acceptInto(l, conns)
			client, err := Dial(t.Context(), path, nil, &Config{AllowDirectAccess: true})
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server := <-conns
			defer server.Close()
			r, err := NewRegion(1 << 20)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for i := range r.Bytes() {
				r.Bytes()[i] = 0xab
			}
			g, err := client.Grant(t.Context(), r, ReadOnly)
			if err != nil {
				t.Fatal(err)
			}
			var rr *RemoteRegion
			waitWithin(t, 5*time.Second, func() bool { rr, err = server.Region(g.ID()); return err == nil }, "the grant to arrive")
			inUse := make(chan struct{})
			stop := make(chan struct{})
			done := make(chan [2]int)
			go func() {
				var saw [2]int // pages of the region seen, zero pages seen
				_ = rr.Use(func(mem []byte) {
					close(inUse)
					for {
						for i := 0; i < len(mem); i += 4096 {
							switch mem[i] {
							case 0xab:
								saw[0]++
							case 0:
								saw[1]++
							}
						}
						select {
						case <-stop:
							return
						default:
						}
					}
				})
				done <- saw
			}()
			<-inUse
			if end == "revoke" {
				if err := g.Revoke(t.Context()); err != nil {
					t.Fatal(err)
				}
				// Once a call made after Revoke returns, the peer has
				// handled the revocation.
				_, _ = client.Call(t.Context(), []byte("after the revoke"))
			} else {
				client.Close()
				<-server.Done()
			}
			time.Sleep(20 * time.Millisecond) // the reader goes on reading
			close(stop)
			saw := <-done
			if saw[1] == 0 {
				t.Errorf("the reader never saw the region blanked after the %s", end)
			}
			t.Logf("reader saw %d pages of the region and %d zero pages after the %s; no fault", saw[0], saw[1], end)
			if err := rr.Use(func([]byte) {}); !errors.Is(err, ErrNotGranted) {
				t.Errorf("Use after the %s = %v; want ErrNotGranted", end, err)
			}
		})
	}
	waitWithin(t, 5*time.Second, func() bool { return regionMaps(t) == baseMaps }, "region mappings to return to the baseline")
}

// TestDisableSections: a port whose policy says maxSectionBytesPerConnection
// 0 used to map sections anyway (a 512 MiB section was mapped and served).
// Config.DisableSections (which that policy sets) refuses them and fails
// large messages with ErrTooLarge saying why.
func TestDisableSections(t *testing.T) {
	checkLeaks(t)
	cfg := Policy{MaxSectionBytes: 0}.apply(Config{Handler: testHandler(nil)})
	path, conns, good, _ := listenWithGood(t, &cfg, nil, 2)
	if good.Limits().MaxSectionBytes != 0 {
		t.Errorf("client may lend %d section bytes to a server without sections", good.Limits().MaxSectionBytes)
	}
	if _, err := good.Call(t.Context(), make([]byte, 1<<20)); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "does not take shared-memory sections") {
		t.Errorf("1 MiB call to a server without sections = %v; want ErrTooLarge", err)
	}
	if _, err := good.Call(t.Context(), []byte("big:1048576")); err == nil || !strings.Contains(err.Error(), "sections are disabled on this side") {
		t.Errorf("1 MiB reply from a server without sections = %v; want a refusal naming DisableSections", err)
	}
	attack(t, path, conns, []hostileStep{{sectionMsg(1, 512<<20), func() int { return sectionFD(t, 1<<20, goodSeals) }}}, "sections are disabled on this side")
}

// TestHostileReleaseOfUnsentBuffer: a peer could "release" a buffer this
// side had allocated but not yet sent (it learns section ids and offsets
// from the announcement), so a Loan still being written could be handed
// out again. Such a release is now a protocol error.
func TestHostileReleaseOfUnsentBuffer(t *testing.T) {
	checkLeaks(t)
	loaned := make(chan struct{})
	l, path := listenTest(t, &Config{Handler: HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		loan, err := r.Conn().Loan(ctx, 1<<20)
		if err != nil {
			return nil, err
		}
		defer loan.Release()
		close(loaned)
		<-ctx.Done()
		return nil, ctx.Err()
	})})
	conns := make(chan *Conn, 1)
	go acceptInto(l, conns)
	fd, err := rawConnect(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close(fd)
	server := <-conns
	defer server.Close()
	if err := sys.Sendmsg(fd, header(wire.TypeRequest, 0, 1, []byte("loan")), nil, nil, sys.MsgNoSignal); err != nil {
		t.Fatal(err)
	}
	<-loaned
	release := header(wire.TypeRelease, 0, 0, wire.AppendExtent(nil, wire.Extent{Section: 1, Offset: 0, Length: 1 << 20}))
	if err := sys.Sendmsg(fd, release, nil, nil, sys.MsgNoSignal); err != nil {
		t.Fatal(err)
	}
	select {
	case <-server.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a release of a buffer never sent was accepted")
	}
	if err := server.Err(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "that was not lent") {
		t.Fatalf("server ended with %v; want a protocol error", err)
	}
}

// TestHostileHugetlbSection: hugetlbfs allows punching a hole under
// F_SEAL_SHRINK, and reading a hole of a hugetlb file faults with SIGBUS.
// Such memfds are refused as sections and grants, whatever their seals.
func TestHostileHugetlbSection(t *testing.T) {
	checkLeaks(t)
	const huge = 2 << 20
	// Reserve a few huge pages where possible, so the refusal is the
	// library's, not mmap's.
	if old, err := os.ReadFile("/proc/sys/vm/nr_hugepages"); err == nil {
		if os.WriteFile("/proc/sys/vm/nr_hugepages", []byte("4"), 0o644) == nil {
			t.Cleanup(func() { _ = os.WriteFile("/proc/sys/vm/nr_hugepages", old, 0o644) })
		}
	}
	hfd := func() int {
		fd, err := unix.MemfdCreate("kalpc-hugetlb", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_HUGETLB)
		if err != nil {
			t.Skipf("no hugetlb memfd here: %v", err)
		}
		if err := unix.Ftruncate(fd, huge); err != nil {
			t.Skipf("cannot size a hugetlb memfd: %v", err)
		}
		_ = sys.AddSeals(fd, goodSeals)
		return fd
	}
	probe := hfd()
	sys.Close(probe)
	l, path := listenTest(t, &Config{AllowDirectAccess: true})
	conns := make(chan *Conn, 2)
	go acceptInto(l, conns)
	attack(t, path, conns, []hostileStep{{sectionMsg(1, huge), hfd}}, "hugetlb")
}

// TestListenLockNoFollow: Listen opened path.lock following symlinks, so
// whoever could write the port's directory could make it create or lock
// another file. A symlink there is now refused.
func TestListenLockNoFollow(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	path := filepath.Join(dir, "port.sock")
	if err := os.Symlink(target, path+".lock"); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(path, nil)
	if err == nil {
		l.Close()
		t.Fatal("Listen followed a symlinked lock file")
	}
	if _, serr := os.Lstat(target); serr == nil {
		t.Errorf("Listen created %s through the symlink", target)
	}
	t.Logf("Listen with a symlinked lock file: %v", err)
}
