//go:build linux && !kalpc_stub

package alpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

func init() {
	hostileHelpers["grant-holder"] = helperGrantHolder
}

// The grants the port gives the grant holder, by grant id.
const (
	holdFlip = 1 // read-write: the holder flips its bytes and tries to resize it
	holdRO   = 2 // read-only: the holder tries every way to write it
	holdSeal = 3 // read-write: the holder seals it F_SEAL_SEAL
)

// helperGrantHolder ("path|statsfile|flipms") connects announcing direct
// access and waits for the three grants above. It maps them, then, while a
// goroutine flips every byte of the read-write region between flipA and
// flipB for flipms, tries to resize that region, and to write to the
// read-only one in every way it can (a writable mapping, mprotect,
// /proc/self/mem, pwrite, pwrite through a /proc/self/fd reopen) or to
// resize or punch holes in it. After flipping it punches a hole in the
// read-write region (allowed: it zeroes pages, the size stays) and adds
// seals that restrict the owner's later grants (F_SEAL_FUTURE_WRITE on one,
// F_SEAL_SEAL on another). It writes "name=result" for each attempt
// ("ok" or the errno's name), then keeps its mappings until stdin closes.
func helperGrantHolder(arg string) error {
	f, err := splitArg(arg, 3)
	if err != nil {
		return err
	}
	path, stats, flipFor := f[0], f[1], time.Duration(atoi(f[2]))*time.Millisecond
	p := hostileParams
	p.Features |= wire.FeatureDirectAccess
	fd, err := rawConnectParams(context.Background(), path, p, nil)
	if err != nil {
		return err
	}
	defer sys.Close(fd)
	fmt.Println("READY")

	fds, sizes := map[uint64]int{}, map[uint64]int{}
	buf := make([]byte, wire.HeaderSize+DefaultInlineLimit)
	oob := make([]byte, sys.OOBSpace(1))
	for len(fds) < 3 {
		n, oobn, _, err := sys.Recvmsg(fd, buf, oob, sys.MsgCmsgCloexec)
		if err != nil || n == 0 {
			return fmt.Errorf("waiting for grants: %d bytes, %v", n, err)
		}
		got, _ := sys.ParseRights(oob[:oobn])
		h, _, err := wire.Parse(buf[:n])
		if err != nil || h.Type != wire.TypeGrant || len(got) != 1 {
			sys.CloseAll(got)
			continue
		}
		fds[h.ID], sizes[h.ID] = got[0], int(h.Aux64)
	}
	rw, ro, sealMe := fds[holdFlip], fds[holdRO], fds[holdSeal]
	rwSize, roSize := sizes[holdFlip], sizes[holdRO]
	rwMem, err := unix.Mmap(rw, 0, rwSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping the read-write grant: %w", err)
	}
	roMem, err := unix.Mmap(ro, 0, roSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping the read-only grant: %w", err)
	}

	var stop atomic.Bool
	flipped := make(chan int)
	go func() {
		a, b := bytes.Repeat([]byte{flipA}, rwSize), bytes.Repeat([]byte{flipB}, rwSize)
		n := 0
		for ; !stop.Load(); n++ {
			copy(rwMem, b)
			copy(rwMem, a)
		}
		flipped <- n
	}()
	start := time.Now()

	var results []string
	try := func(name string, err error) {
		r := "ok"
		if errno := (unix.Errno)(0); errors.As(err, &errno) {
			r = unix.ErrnoName(errno)
		} else if err != nil {
			r = err.Error()
		}
		results = append(results, name+"="+r)
	}
	seal := func(fd, seals int) error {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals)
		return err
	}
	try("rw-ftruncate-shrink", unix.Ftruncate(rw, 0))
	try("rw-ftruncate-grow", unix.Ftruncate(rw, int64(2*rwSize)))
	try("rw-fallocate-grow", unix.Fallocate(rw, 0, 0, int64(2*rwSize)))
	try("rw-fallocate-keep-size-beyond-end", unix.Fallocate(rw, unix.FALLOC_FL_KEEP_SIZE, int64(rwSize), int64(rwSize)))
	try("rw-seal-write", seal(rw, unix.F_SEAL_WRITE)) // the owner's writable mapping exists

	if m, err := unix.Mmap(ro, 0, roSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
		_ = unix.Munmap(m)
		try("ro-mmap-writable", nil)
	} else {
		try("ro-mmap-writable", err)
	}
	try("ro-mprotect-writable", unix.Mprotect(roMem, unix.PROT_READ|unix.PROT_WRITE))
	if mem, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0); err != nil {
		try("ro-proc-self-mem", err)
	} else {
		_, err := unix.Pwrite(int(mem.Fd()), []byte("x"), int64(uintptr(unsafe.Pointer(&roMem[0]))))
		try("ro-proc-self-mem", err)
		mem.Close()
	}
	_, err = unix.Pwrite(ro, []byte("x"), 0)
	try("ro-pwrite", err)
	if f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", ro), os.O_RDWR, 0); err != nil {
		try("ro-reopen-pwrite", err)
	} else {
		_, err := unix.Pwrite(int(f.Fd()), []byte("x"), 0)
		try("ro-reopen-pwrite", err)
		f.Close()
	}
	try("ro-ftruncate-shrink", unix.Ftruncate(ro, 0))
	try("ro-punch-hole", unix.Fallocate(ro, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, int64(roSize)))

	time.Sleep(time.Until(start.Add(flipFor)))
	stop.Store(true)
	flips := <-flipped
	try("rw-punch-hole", unix.Fallocate(rw, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, int64(rwSize)))
	try("rw-seal-future-write", seal(rw, unix.F_SEAL_FUTURE_WRITE))
	try("rw-seal-seal", seal(sealMe, unix.F_SEAL_SEAL))
	if err := writeStats(stats, "flips=%d %s", flips, strings.Join(results, " ")); err != nil {
		return err
	}
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return nil
}

// TestHostileGrantHolder: a process holding our regions attacks them. With
// a read-write grant it flips bytes while we read (we see only bytes it or
// we wrote: regions are shared memory, not snapshots) and tries to shrink
// or grow the memfd (the seals refuse it, so we never fault with SIGBUS;
// punching a hole only zeroes pages). With a read-only grant every way to
// write fails. Seals it adds can only restrict our later grants of that
// region, which then fail with a clear error instead of breaking the
// connection we grant to. Another connection's p99 holds throughout.
func TestHostileGrantHolder(t *testing.T) {
	checkLeaks(t)
	const (
		rwSize = 1 << 20
		roSize = 64 << 10
		flipMS = 600
	)
	path, conns, good, goodServer := listenWithGood(t, &Config{AllowDirectAccess: true, Handler: testHandler(nil)}, &Config{AllowDirectAccess: true}, 2)
	g := startGoodTraffic(t, good)

	stats := filepath.Join(t.TempDir(), "stats")
	startHelper(t, "grant-holder", fmt.Sprintf("%s|%s|%d", path, stats, flipMS))
	holder := <-conns
	defer holder.Close()

	newRegion := func(size int, fill []byte) *Region {
		r, err := NewRegion(size)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		copy(r.Bytes(), fill)
		return r
	}
	flip := newRegion(rwSize, bytes.Repeat([]byte{flipA}, rwSize))
	ro := newRegion(roSize, pattern(roSize))
	sealMe := newRegion(4096, nil)
	for _, gr := range []struct {
		r      *Region
		access Access
		id     uint64
	}{{flip, ReadWrite, holdFlip}, {ro, ReadOnly, holdRO}, {sealMe, ReadWrite, holdSeal}} {
		gnt, err := holder.Grant(t.Context(), gr.r, gr.access)
		if err != nil {
			t.Fatal(err)
		}
		if gnt.ID() != gr.id {
			t.Fatalf("grant id %d; the helper expects %d", gnt.ID(), gr.id)
		}
	}

	// Read the flipped region until the holder is done with it: every
	// byte is one of the two values it writes, or zero once it punched a
	// hole. Touching every page would fault with SIGBUS had it managed to
	// shrink the file.
	reads, mixed, foreign := 0, 0, 0
	var result string
	for result == "" {
		var na, nb int
		for _, c := range flip.Bytes() {
			switch c {
			case flipA:
				na++
			case flipB:
				nb++
			case 0:
			default:
				foreign++
			}
		}
		reads++
		if na > 0 && nb > 0 {
			mixed++
		}
		if b, err := os.ReadFile(stats); err == nil && len(b) > 0 {
			result = string(b)
		}
	}
	g.finish(t, 10, 50*time.Millisecond)
	t.Logf("grant holder: %s", result)
	t.Logf("owner read the flipped region %d times: %d reads mixed both values, %d foreign bytes", reads, mixed, foreign)
	if foreign > 0 {
		t.Errorf("the owner read %d bytes nobody wrote", foreign)
	}
	results := map[string]string{}
	for _, kv := range strings.Fields(result) {
		k, v, _ := strings.Cut(kv, "=")
		results[k] = v
	}
	for name, want := range map[string]string{
		"rw-ftruncate-shrink":               "EPERM", // F_SEAL_SHRINK
		"rw-ftruncate-grow":                 "EPERM", // F_SEAL_GROW
		"rw-fallocate-grow":                 "EPERM",
		"rw-fallocate-keep-size-beyond-end": "EPERM",
		"rw-seal-write":                     "EBUSY", // our writable mapping
		"ro-mmap-writable":                  "EPERM", // F_SEAL_FUTURE_WRITE
		"ro-mprotect-writable":              "EACCES",
		"ro-proc-self-mem":                  "EIO",
		"ro-pwrite":                         "EPERM",
		"ro-reopen-pwrite":                  "EPERM",
		"ro-ftruncate-shrink":               "EPERM",
		"ro-punch-hole":                     "EPERM",
		"rw-punch-hole":                     "ok", // zeroes pages, keeps the size
		"rw-seal-future-write":              "ok", // seals only restrict later grants
		"rw-seal-seal":                      "ok",
	} {
		if got := results[name]; got != want {
			t.Errorf("grant holder's %s: %s; want %s", name, got, want)
		}
	}
	if n, _ := sys.FileSize(flip.fd); n != rwSize || flip.Len() != rwSize {
		t.Errorf("the flipped region is %d bytes (mapping %d); want %d", n, flip.Len(), rwSize)
	}
	if !bytes.Equal(ro.Bytes(), pattern(roSize)) {
		t.Error("the read-only region changed")
	}
	// The owner's own mapping keeps working after the holder's seals.
	flip.Bytes()[0] = 1
	if flip.Bytes()[0] != 1 {
		t.Error("the owner can no longer write its region")
	}

	// Seals the holder added restrict our later grants of those regions:
	// the grant fails here, clearly, and the connection we grant to is
	// unharmed (without the check its peer could not map the grant and
	// would end the connection with a protocol error).
	if _, err := goodServer.Grant(t.Context(), flip, ReadWrite); !errors.Is(err, ErrReadOnly) || !strings.Contains(err.Error(), "sealed against writing") {
		t.Errorf("read-write grant of a region its holder sealed F_SEAL_FUTURE_WRITE = %v; want ErrReadOnly", err)
	}
	if _, err := goodServer.Grant(t.Context(), sealMe, ReadOnly); err == nil || !strings.Contains(err.Error(), "sealing region read-only") {
		t.Errorf("read-only grant of a region its holder sealed F_SEAL_SEAL = %v; want a sealing error", err)
	}
	if _, err := goodServer.Grant(t.Context(), sealMe, ReadWrite); err != nil {
		t.Errorf("read-write grant of a region sealed F_SEAL_SEAL: %v", err)
	}
	if out, err := good.Call(t.Context(), []byte("echo:after")); err != nil || string(out) != "after" || good.Err() != nil {
		t.Errorf("good connection after the grants: %q, %v (%v)", out, err, good.Err())
	}
	if err := holder.Err(); err != nil {
		t.Errorf("the holder's connection ended with %v; it broke no protocol rule", err)
	}
}

func init() {
	hostileHelpers["region-user"] = helperRegionUser
}

// helperRegionUser ("path") serves a port allowing direct access with
// regionUserHandler, until stdin closes.
func helperRegionUser(path string) error {
	l, err := Listen(path, &Config{AllowDirectAccess: true, Handler: regionUserHandler()})
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		_ = l.Close()
	}()
	fmt.Println("READY")
	for {
		r, err := l.Accept(context.Background())
		if err != nil {
			return nil
		}
		if _, err := r.Accept(nil); err != nil {
			return err
		}
	}
}

// hammer is a set of goroutines reading and writing a granted region
// through the API until an access fails.
type hammer struct {
	wg   sync.WaitGroup
	ops  atomic.Int64
	mu   sync.Mutex
	errs []string
}

// regionUserHandler serves:
//
//	hammer:id         start 2 goroutines writing (WriteAt, an increasing counter at 8*i) and 2 reading (ReadAt) grant id until an access fails
//	hammer-result:id  wait for them; reply "ops=N errs=<each goroutine's error>|..."
//	access:id         look grant id up and read a byte of it
func regionUserHandler() Handler {
	var hammers sync.Map
	return HandlerFunc(func(ctx context.Context, req *Request) ([]byte, error) {
		verb, arg, _ := strings.Cut(string(req.Payload()), ":")
		id, _ := strconv.ParseUint(arg, 10, 64)
		switch verb {
		case "hammer":
			rr, err := req.Conn().Region(id)
			if err != nil {
				return nil, err
			}
			h := &hammer{}
			hammers.Store(id, h)
			for i := range 4 {
				h.wg.Add(1)
				go func() {
					defer h.wg.Done()
					var err error
					b := make([]byte, 4096)
					for n := uint64(1); err == nil; n++ {
						if i%2 == 0 {
							binary.LittleEndian.PutUint64(b, n)
							_, err = rr.WriteAt(b[:8], int64(8*i))
						} else {
							_, err = rr.ReadAt(b, 0)
						}
						h.ops.Add(1)
					}
					h.mu.Lock()
					h.errs = append(h.errs, err.Error())
					h.mu.Unlock()
				}()
			}
			return []byte("started"), nil
		case "hammer-result":
			v, ok := hammers.Load(id)
			if !ok {
				return nil, Errorf(CodeInvalidArgument, "no hammer on %d", id)
			}
			h := v.(*hammer)
			h.wg.Wait()
			return fmt.Appendf(nil, "ops=%d errs=%s", h.ops.Load(), strings.Join(h.errs, "|")), nil
		case "access":
			rr, err := req.Conn().Region(id)
			if err != nil {
				return nil, err
			}
			_, err = rr.ReadAt(make([]byte, 1), 0)
			return nil, err
		}
		return nil, Errorf(CodeInvalidArgument, "unknown verb %q", verb)
	})
}

// TestGrantRevokeDuringAccess: the peer (this library, in another process)
// hammers a read-write grant with reads and writes while the owner revokes
// it. The peer's accesses in progress finish, every later one fails with
// ErrNotGranted (also a lookup by id), and once a call made after Revoke
// returns, the region no longer changes. The owner's Grant is dead: a
// second Revoke fails with ErrNotGranted. The connection carries on.
func TestGrantRevokeDuringAccess(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "port.sock")
	startHelper(t, "region-user", path)
	c, err := Dial(t.Context(), path, nil, &Config{AllowDirectAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := NewRegion(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for round := range 3 {
		gnt, err := c.Grant(t.Context(), r, ReadWrite)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Call(t.Context(), fmt.Appendf(nil, "hammer:%d", gnt.ID())); err != nil {
			t.Fatal(err)
		}
		// Revoke while the peer's writes are landing.
		deadline := time.Now().Add(10 * time.Second)
		for binary.LittleEndian.Uint64(r.Bytes()) < 1000 {
			if time.Now().After(deadline) {
				t.Fatal("the peer's writes did not arrive")
			}
			time.Sleep(time.Millisecond)
		}
		start := time.Now()
		if err := gnt.Revoke(t.Context()); err != nil {
			t.Fatal(err)
		}
		// The peer handles the revoke before this call.
		_, err = c.Call(t.Context(), fmt.Appendf(nil, "access:%d", gnt.ID()))
		revoked := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), ErrNotGranted.Error()) {
			t.Fatalf("peer's lookup after Revoke = %v; want %v", err, ErrNotGranted)
		}
		out, err := c.Call(t.Context(), fmt.Appendf(nil, "hammer-result:%d", gnt.ID()))
		if err != nil {
			t.Fatal(err)
		}
		_, errs, _ := strings.Cut(string(out), "errs=")
		for _, e := range strings.Split(errs, "|") {
			if e != ErrNotGranted.Error() {
				t.Errorf("a peer goroutine stopped with %q; want %q", e, ErrNotGranted)
			}
		}
		snap := bytes.Clone(r.Bytes())
		time.Sleep(50 * time.Millisecond)
		if !bytes.Equal(snap, r.Bytes()) {
			t.Error("the region changed after the revoke was acknowledged by a later call")
		}
		t.Logf("round %d: peer: %s; revoke to the peer's refusal: %v", round, out, revoked.Round(time.Microsecond))
		if err := gnt.Revoke(t.Context()); !errors.Is(err, ErrNotGranted) {
			t.Errorf("second Revoke = %v; want ErrNotGranted", err)
		}
	}
	if err := c.Err(); err != nil {
		t.Errorf("connection ended with %v", err)
	}
}
