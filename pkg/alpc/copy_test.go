//go:build linux && !kalpc_stub

package alpc

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
)

// TestPrivateCopy checks the copy Payload and Call hand to the caller: the
// same bytes, memory of its own (neither the source nor another copy), and
// writable, below and above prefaultMin.
func TestPrivateCopy(t *testing.T) {
	for _, n := range []int{0, 1, 4095, prefaultMin - 1, prefaultMin, prefaultMin + 1, prefaultMin + 4097, 3<<20 + 1} {
		src := pattern(n)
		dst := privateCopy(src)
		if !bytes.Equal(dst, src) {
			t.Fatalf("%d bytes: the copy differs from the source", n)
		}
		if len(dst) != n || cap(dst) < n {
			t.Fatalf("%d bytes: copy has len %d cap %d", n, len(dst), cap(dst))
		}
		if n == 0 {
			continue
		}
		again := privateCopy(src)
		for i := range dst {
			dst[i] ^= 0xff
		}
		if !bytes.Equal(src, pattern(n)) || !bytes.Equal(again, src) {
			t.Fatalf("%d bytes: writing the copy changed the source or another copy", n)
		}
	}
}

// TestPrefault checks that Prefault makes every page of a fresh private
// mapping present, that pages already there keep their bytes, and that it
// accepts memory not aligned to pages.
func TestPrefault(t *testing.T) {
	page := os.Getpagesize()
	const pages = 1100 // more than one mincore chunk
	mem, err := unix.Mmap(-1, 0, pages*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Munmap(mem) }()
	// Some pages present with data, the rest never touched.
	for _, p := range []int{0, 3, 511, 512, 700} {
		mem[p*page] = byte(p)
	}
	if off, err := sys.Missing(mem); err != nil || off != int64(page) {
		t.Fatalf("before: first missing page at %d (%v), want %d", off, err, page)
	}
	// Unaligned ends: the partial first and last pages are left alone.
	sys.Prefault(mem[10 : len(mem)-10])
	if off, err := sys.Missing(mem[page : len(mem)-page]); err != nil || off != int64(len(mem)-2*page) {
		t.Fatalf("after: page at offset %d missing (%v)", off+int64(page), err)
	}
	for _, p := range []int{0, 3, 511, 512, 700} {
		if mem[p*page] != byte(p) {
			t.Fatalf("page %d lost its byte", p)
		}
	}
	if mem[2*page] != 0 {
		t.Fatal("a populated page is not zero")
	}
	sys.Prefault(nil)
	sys.Prefault(mem[:1])
}
