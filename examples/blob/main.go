// Command blob moves large blobs between two processes through kalpc's
// shared-memory sections, without copying them through a socket, and
// checks every byte with SHA-256:
//
//   - upload: the client borrows buffers in its section (Loan), generates
//     the blob straight into them and hands each one over without a copy
//     (SendLoan); the server hashes each chunk in place (Request.View);
//   - put: one large message written in place and sent as a call
//     (CallLoan), hashed in place by the server;
//   - download: the server replies with a large blob that the client hashes
//     in place in the server's section (CallView), without copying it out.
//
// On one machine (no Kubernetes):
//
//	blob server -socket /tmp/kalpc-blob.sock
//	blob client -socket /tmp/kalpc-blob.sock -size 1GiB
//
// In a pod with the kalpc sidecar (KALPC_SOCKET set), -port names the
// ConnectionPort instead; see blob.yaml and README.md.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kalpc/kalpc/examples/internal/endpoint"
	"github.com/kalpc/kalpc/pkg/alpc"
)

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	var addr endpoint.Addr
	addr.RegisterFlags(fs, "blob", filepath.Join(os.TempDir(), "kalpc-blob.sock"))
	size := byteSize(128 << 20)
	fs.Var(&size, "size", "client: bytes to upload and to download (suffixes KiB, MiB, GiB)")
	chunk := byteSize(4 << 20)
	fs.Var(&chunk, "chunk", "client: bytes per loaned upload chunk")
	wait := fs.Duration("wait", 30*time.Second, "client: how long to wait for the server to publish the port")
	_ = fs.Parse(os.Args[2:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch os.Args[1] {
	case "server":
		err = serve(ctx, addr)
	case "client":
		err = client(ctx, addr, int64(size), int(chunk), *wait)
	default:
		usage()
	}
	stop()
	if err != nil {
		log.Printf("%s: %v", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: blob server|client [-socket path | -port [namespace/]name] [-size bytes] [-chunk bytes]")
	os.Exit(2)
}

// Calls carry a command line ("put\n", "uploaded\n<n>", "get\n<n>\n<seed>")
// followed by any data. Upload chunks are one-way messages with no header:
// kalpc hands them to the server's handler one at a time, in order.

// upload is the state of one connection's upload: the running hash of the
// chunks received so far.
type upload struct {
	mu      sync.Mutex
	sum     hash.Hash
	n       int64
	changed chan struct{} // closed and replaced whenever n grows
}

// uploads holds the upload of each connection.
type uploads struct {
	mu    sync.Mutex
	conns map[*alpc.Conn]*upload
}

func (u *uploads) get(c *alpc.Conn) *upload {
	u.mu.Lock()
	defer u.mu.Unlock()
	up, ok := u.conns[c]
	if !ok {
		up = &upload{sum: sha256.New(), changed: make(chan struct{})}
		u.conns[c] = up
		go func() { // forget it when the connection ends
			<-c.Done()
			u.mu.Lock()
			delete(u.conns, c)
			u.mu.Unlock()
		}()
	}
	return up
}

// add hashes one chunk.
func (up *upload) add(p []byte) {
	up.mu.Lock()
	defer up.mu.Unlock()
	up.sum.Write(p)
	up.n += int64(len(p))
	close(up.changed)
	up.changed = make(chan struct{})
}

// wait returns the hash once n bytes have been hashed. Calls run
// concurrently with one-way messages, so the "uploaded" call can arrive
// before the last chunks have been handled.
func (up *upload) wait(ctx context.Context, n int64) ([]byte, error) {
	for {
		up.mu.Lock()
		got, changed := up.n, up.changed
		if got >= n {
			defer up.mu.Unlock()
			return up.sum.Sum(nil), nil
		}
		up.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("received %d of %d bytes: %w", got, n, ctx.Err())
		}
	}
}

func serve(ctx context.Context, addr endpoint.Addr) error {
	ups := &uploads{conns: make(map[*alpc.Conn]*upload)}
	handler := alpc.HandlerFunc(func(ctx context.Context, req *alpc.Request) ([]byte, error) {
		// View reads the payload where it is: in the client's section for
		// large payloads (no copy). Release returns that memory to the
		// client, so do it as soon as possible.
		v := req.View()
		defer v.Release()
		if req.OneWay() {
			ups.get(req.Conn()).add(v.Bytes())
			return nil, nil
		}
		cmd, data, _ := bytes.Cut(v.Bytes(), []byte("\n"))
		switch string(cmd) {
		case "put": // a whole blob in one message: hash it in place
			sum := sha256.Sum256(data)
			return sum[:], nil
		case "uploaded": // all chunks sent: wait for them, then answer the hash
			n, err := strconv.ParseInt(string(data), 10, 64)
			if err != nil {
				return nil, alpc.Errorf(alpc.CodeInvalidArgument, "bad length %q", data)
			}
			return ups.get(req.Conn()).wait(ctx, n)
		case "get": // reply with the SHA-256 and then n generated bytes
			var n, seed uint64
			if _, err := fmt.Sscanf(string(data), "%d\n%d", &n, &seed); err != nil || n > uint64(req.Conn().Limits().MaxMessageSize)-sha256.Size {
				return nil, alpc.Errorf(alpc.CodeInvalidArgument, "bad get request %q", data)
			}
			reply := make([]byte, sha256.Size+int(n))
			generate(reply[sha256.Size:], seed)
			sum := sha256.Sum256(reply[sha256.Size:])
			copy(reply, sum[:])
			return reply, nil
		}
		return nil, alpc.Errorf(alpc.CodeInvalidArgument, "unknown command %q", cmd)
	})
	l, err := endpoint.Listen(ctx, addr, &alpc.Config{Handler: handler})
	if err != nil {
		return err
	}
	defer l.Close()
	log.Printf("server: published %s", addr)
	for {
		req, err := l.Accept(ctx)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		if err != nil {
			return err
		}
		conn, err := req.Accept(nil)
		if err != nil {
			log.Printf("server: accept: %v", err)
			continue
		}
		log.Printf("server: accepted %s", req.Peer)
		go func() {
			<-conn.Done()
			_ = conn.Close()
		}()
	}
}

func client(ctx context.Context, addr endpoint.Addr, size int64, chunk int, wait time.Duration) error {
	conn, err := endpoint.Dial(ctx, addr, []byte("blob client"), nil, wait)
	if err != nil {
		return err
	}
	defer conn.Close()
	log.Printf("client: connected to %s; limits %+v", addr, conn.Limits())
	if err := uploadBlob(ctx, conn, size, chunk); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	if err := putBlob(ctx, conn, min(size, 16<<20)); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	// One message must fit the connection's limits (in Kubernetes, the
	// ConnectionPort's messagePolicy); the hash comes with it.
	lim := conn.Limits()
	if err := downloadBlob(ctx, conn, min(size, lim.MaxMessageSize-sha256.Size, lim.MaxSectionBytes-sha256.Size)); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	log.Printf("blob: all transfers verified")
	return nil
}

// uploadBlob streams size generated bytes in loaned chunks.
func uploadBlob(ctx context.Context, conn *alpc.Conn, size int64, chunk int) error {
	sum := sha256.New()
	start := time.Now()
	for sent := int64(0); sent < size; {
		n := int(min(int64(chunk), size-sent))
		// The loan is memory in this connection's shared section: write
		// the chunk straight into it...
		loan, err := conn.Loan(ctx, n)
		if err != nil {
			return err
		}
		generate(loan.Bytes(), uint64(sent)+1)
		sum.Write(loan.Bytes())
		// ...and hand it over. No byte is copied: the server reads the same
		// memory, and releases it when its handler is done. From here on
		// the loan belongs to the server.
		if err := conn.SendLoan(ctx, loan); err != nil {
			return err
		}
		sent += int64(n)
	}
	// One call at the end gets the server's hash of everything it received.
	got, err := conn.Call(ctx, fmt.Appendf(nil, "uploaded\n%d", size))
	if err != nil {
		return err
	}
	return verify("upload", "SendLoan", size, time.Since(start), sum.Sum(nil), got)
}

// putBlob sends one large message written in place, as a call.
func putBlob(ctx context.Context, conn *alpc.Conn, size int64) error {
	const header = "put\n"
	loan, err := conn.Loan(ctx, len(header)+int(size))
	if err != nil {
		return err
	}
	copy(loan.Bytes(), header)
	generate(loan.Bytes()[len(header):], 2)
	want := sha256.Sum256(loan.Bytes()[len(header):])
	start := time.Now()
	got, err := conn.CallLoan(ctx, loan) // the loan is spent
	if err != nil {
		return err
	}
	return verify("put", "CallLoan", size, time.Since(start), want[:], got)
}

// downloadBlob asks for size bytes and reads the reply in place.
func downloadBlob(ctx context.Context, conn *alpc.Conn, size int64) error {
	start := time.Now()
	// CallView leaves a large reply in the server's section and lends it to
	// us read-only: hash it where it is, then Release it so the server can
	// reuse the memory.
	v, err := conn.CallView(ctx, fmt.Appendf(nil, "get\n%d\n%d", size, 3))
	if err != nil {
		return err
	}
	defer v.Release()
	b := v.Bytes()
	if len(b) != sha256.Size+int(size) {
		return fmt.Errorf("got %d bytes, want %d", len(b)-sha256.Size, size)
	}
	got := sha256.Sum256(b[sha256.Size:])
	how := "CallView, read in place"
	if !v.Shared() {
		how = "CallView, small enough to come inline"
	}
	return verify("download", how, size, time.Since(start), b[:sha256.Size], got[:])
}

func verify(what, how string, n int64, d time.Duration, want, got []byte) error {
	if !bytes.Equal(want, got) {
		return fmt.Errorf("sha256 mismatch: sent %x, server hashed %x", want, got)
	}
	log.Printf("client: %s: %s in %v (%s): %.0f MB/s end to end (generating, moving and hashing on both sides); sha256 %s matches",
		what, byteSize(n), d.Round(time.Microsecond), how, float64(n)/d.Seconds()/1e6, hex.EncodeToString(got[:8]))
	return nil
}

// generate fills p with cheap pseudo-random bytes derived from seed (an
// xorshift generator: fast enough that hashing, not generating, dominates).
func generate(p []byte, seed uint64) {
	x := seed*0x9e3779b97f4a7c15 | 1
	for len(p) >= 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(p, x)
		p = p[8:]
	}
	for i := range p {
		p[i] = byte(x >> (8 * i))
	}
}

// byteSize is a flag.Value for sizes such as 4096, 64KiB or 1GiB.
type byteSize int64

func (s byteSize) String() string {
	for _, u := range []struct {
		name  string
		shift uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if s >= 1<<u.shift && s%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", s>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d B", int64(s))
}

func (s *byteSize) Set(v string) error {
	shift := 0
	for suffix, sh := range map[string]int{"KiB": 10, "MiB": 20, "GiB": 30} {
		if n, ok := strings.CutSuffix(v, suffix); ok {
			v, shift = n, sh
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("size %q: want a positive number with an optional KiB, MiB or GiB suffix", v)
	}
	*s = byteSize(n << shift)
	return nil
}
