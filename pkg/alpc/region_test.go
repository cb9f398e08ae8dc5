//go:build linux && !kalpc_stub

package alpc

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

func TestDirectAccess(t *testing.T) {
	checkLeaks(t)
	path, _ := startServer(t, "server-direct")
	c, err := Dial(t.Context(), path, nil, &Config{AllowDirectAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	t.Run("read-only", func(t *testing.T) {
		r, err := NewRegion(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		copy(r.Bytes(), pattern(1<<20))
		g, err := c.Grant(t.Context(), r, ReadOnly)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Call(t.Context(), fmt.Appendf(nil, "region-sha:%d", g.ID()))
		if want := sha256.Sum256(pattern(1 << 20)); err != nil || !bytes.Equal(got, want[:]) {
			t.Fatalf("peer read the region as %x, %v; want %x", got, err, want)
		}
		// The owner's mapping stays writable and the peer sees changes.
		r.Bytes()[0] ^= 0xff
		got, _ = c.Call(t.Context(), fmt.Appendf(nil, "region-sha:%d", g.ID()))
		if want := sha256.Sum256(r.Bytes()); !bytes.Equal(got, want[:]) {
			t.Fatal("peer did not see the owner's write")
		}
		_, err = c.Call(t.Context(), fmt.Appendf(nil, "region-write:%d:x", g.ID()))
		if err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Fatalf("peer write to a read-only grant = %v; want a read-only error", err)
		}
		if _, err := c.Grant(t.Context(), r, ReadWrite); !errors.Is(err, ErrReadOnly) {
			t.Errorf("read-write grant of a read-only region = %v; want ErrReadOnly", err)
		}
		if err := g.Revoke(t.Context()); err != nil {
			t.Fatal(err)
		}
		_, err = c.Call(t.Context(), fmt.Appendf(nil, "region-sha:%d", g.ID()))
		if err == nil || !strings.Contains(err.Error(), "not granted") {
			t.Fatalf("peer access after revoke = %v; want not granted", err)
		}
	})
	t.Run("read-write", func(t *testing.T) {
		r, err := NewRegion(4096)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		g, err := c.Grant(t.Context(), r, ReadWrite)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Call(t.Context(), fmt.Appendf(nil, "region-write:%d:written by the peer", g.ID())); err != nil {
			t.Fatal(err)
		}
		if got := string(r.Bytes()[:19]); got != "written by the peer" {
			t.Fatalf("region holds %q after the peer's write", got)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		plain, err := Dial(t.Context(), path, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		r, err := NewRegion(4096)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if _, err := plain.Grant(t.Context(), r, ReadOnly); !errors.Is(err, ErrDirectAccessDisabled) {
			t.Fatalf("Grant without AllowDirectAccess = %v; want ErrDirectAccessDisabled", err)
		}
	})
}

// rawDialDirect is rawDial announcing direct access.
func rawDialDirect(t *testing.T, path string) int {
	t.Helper()
	fd, err := connect(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	p := wire.Params{InlineLimit: DefaultInlineLimit, MaxPendingCalls: 16, MaxMessageSize: DefaultMaxMessageSize, MaxSectionBytes: 1 << 30, Features: wire.FeatureSections | wire.FeatureDirectAccess}
	if err := writeHandshake(t.Context(), fd, wire.TypeConnect, &p, nil); err != nil {
		t.Fatal(err)
	}
	if h, _, err := readHandshake(t.Context(), fd); err != nil || h.Type != wire.TypeAccept {
		t.Fatalf("raw handshake: %v %v", h.Type, err)
	}
	return fd
}

func TestReadOnlyGrantCannotBeMappedWritable(t *testing.T) {
	checkLeaks(t)
	l, path := listenTest(t, &Config{AllowDirectAccess: true})
	conns := make(chan *Conn, 1)
	go acceptInto(l, conns)
	fd := rawDialDirect(t, path)
	defer sys.Close(fd)
	server := <-conns
	defer server.Close()

	r, err := NewRegion(1 << 16)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	copy(r.Bytes(), "secret but readable")
	if _, err := server.Grant(t.Context(), r, ReadOnly); err != nil {
		t.Fatal(err)
	}
	// The grantee (this raw peer) receives the descriptor.
	buf := make([]byte, 64)
	oob := make([]byte, sys.OOBSpace(1))
	_, oobn, _, err := sys.Recvmsg(fd, buf, oob, sys.MsgCmsgCloexec)
	if err != nil {
		t.Fatal(err)
	}
	fds, err := sys.ParseRights(oob[:oobn])
	if err != nil || len(fds) != 1 {
		t.Fatalf("grant carried %d fds, %v", len(fds), err)
	}
	defer sys.CloseAll(fds)
	if m, err := sys.Mmap(fds[0], 1<<16, sys.ProtRead|sys.ProtWrite); err == nil {
		sys.Munmap(m)
		t.Fatal("grantee mapped a read-only grant writable")
	}
	// Reopening the memfd through /proc does not get around the seal.
	f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fds[0]), os.O_RDWR, 0)
	if err == nil {
		defer f.Close()
		if m, err := sys.Mmap(int(f.Fd()), 1<<16, sys.ProtRead|sys.ProtWrite); err == nil {
			sys.Munmap(m)
			t.Fatal("grantee mapped a reopened read-only grant writable")
		}
		if _, err := f.WriteAt([]byte("x"), 0); err == nil {
			t.Fatal("grantee wrote to a read-only grant through write(2)")
		}
	}
	m, err := sys.Mmap(fds[0], 1<<16, sys.ProtRead)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Munmap(m)
	if !bytes.HasPrefix(m, []byte("secret but readable")) {
		t.Fatal("read-only mapping does not show the region")
	}
}

func TestHostileGrants(t *testing.T) {
	checkLeaks(t)
	grant := func(id uint64, access uint32, size uint64) []byte {
		h := wire.Header{Type: wire.TypeGrant, ID: id, NFDs: 1, Aux32: access, Aux64: size}
		b := make([]byte, wire.HeaderSize)
		h.Put(b)
		return b
	}
	tests := []struct {
		name  string
		allow bool
		msg   []byte
		fd    func() int
		wants string
	}{
		{"not allowed", false, grant(1, 1, 4096), func() int { return sectionFD(t, 4096, sys.SealShrink|sys.SealGrow) }, "direct access was not negotiated"},
		{"unsealed", true, grant(1, 1, 4096), func() int { return sectionFD(t, 4096, 0) }, "not sealed"},
		{"pipe", true, grant(1, 1, 4096), func() int { r, w := pipeFDs(t); sys.Close(w); return r }, "not a memfd"},
		{"wrong size", true, grant(1, 1, 8192), func() int { return sectionFD(t, 4096, sys.SealShrink|sys.SealGrow|sys.SealFutureWrite) }, "announced 8192"},
		{"bad access", true, grant(1, 7, 4096), func() int { return sectionFD(t, 4096, sys.SealShrink|sys.SealGrow) }, "invalid access 7"},
		{"read-write of a write-sealed memfd", true, grant(1, 2, 4096), func() int {
			return sectionFD(t, 4096, sys.SealShrink|sys.SealGrow|sys.SealFutureWrite)
		}, "cannot be mapped read-write"},
	}
	// One port allowing direct access and one not, each with a good
	// connection whose p99 is measured before and during the attacks.
	type port struct {
		path  string
		conns chan *Conn
		g     *goodTraffic
	}
	ports := map[bool]*port{}
	for _, allow := range []bool{false, true} {
		l, path := listenTest(t, &Config{AllowDirectAccess: allow, Handler: testHandler(nil)})
		p := &port{path: path, conns: make(chan *Conn, 1)}
		go acceptInto(l, p.conns)
		good, err := Dial(t.Context(), path, nil, &Config{AllowDirectAccess: true})
		if err != nil {
			t.Fatal(err)
		}
		defer good.Close()
		goodServer := <-p.conns
		defer goodServer.Close()
		p.g = startGoodTraffic(t, good)
		ports[allow] = p
	}
	// Each attack is repeated, so that the good connections make enough
	// calls during the attacks for a p99.
	const rounds = 20
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ports[tt.allow]
			for range rounds {
				fd := rawDialDirect(t, p.path)
				server := <-p.conns
				gfd := tt.fd()
				err := sys.Sendmsg(fd, tt.msg, nil, []int{gfd}, sys.MsgNoSignal)
				sys.Close(gfd)
				if err != nil {
					t.Fatal(err)
				}
				select {
				case <-server.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("server kept the hostile connection open")
				}
				server.Close()
				sys.Close(fd)
				if err := server.Err(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tt.wants) {
					t.Fatalf("server ended with %v; want a protocol error containing %q", err, tt.wants)
				}
			}
		})
	}
	for _, allow := range []bool{false, true} {
		ports[allow].g.finish(t, 10, 50*time.Millisecond)
	}
}
