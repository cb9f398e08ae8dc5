// Command region shows kalpc's direct access, the Linux analog of ALPC's
// reads and writes into a peer's memory: a process grants its peer a
// region of memory it owns, and the peer reads and writes it in place,
// with no message per access, until the owner revokes the grant.
//
// The server owns two regions:
//
//   - a catalog, granted read-only to every client: the server keeps
//     updating it and clients see each change in place; writes are refused;
//   - a scratch region per client, granted read-write: both sides write it
//     and read what the other wrote.
//
// On detach the server revokes both grants, and the client's next access
// fails with alpc.ErrNotGranted. Both sides must allow direct access
// (alpc.Config.AllowDirectAccess), and in Kubernetes so must the port
// (messagePolicy.directAccess).
//
// On one machine (no Kubernetes):
//
//	region server -socket /tmp/kalpc-region.sock
//	region client -socket /tmp/kalpc-region.sock
//
// In a pod with the kalpc sidecar (KALPC_SOCKET set), -port names the
// ConnectionPort instead; see region.yaml and README.md.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc"
)

const (
	catalogSize = 1 << 20
	scratchSize = 64 << 10
	// The client writes at the start of its scratch region, the server at
	// replyOffset.
	replyOffset = scratchSize / 2
)

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	port := fs.String("port", "region", `with the kalpc sidecar (KALPC_SOCKET set): the ConnectionPort, "name" or "namespace/name"`)
	socket := fs.String("socket", filepath.Join(os.TempDir(), "kalpc-region.sock"), "without the sidecar: the port's socket path")
	wait := fs.Duration("wait", 30*time.Second, "client: how long to wait for the server to publish the port")
	_ = fs.Parse(os.Args[2:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch os.Args[1] {
	case "server":
		err = serve(ctx, *port, *socket)
	case "client":
		err = client(ctx, *port, *socket, *wait)
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
	fmt.Fprintln(os.Stderr, "usage: region server|client [-socket path | -port [namespace/]name]")
	os.Exit(2)
}

// The catalog's layout: an 8-byte version the server bumps, then data.
func catalogVersion(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// server holds the regions it owns and what it granted to each client.
type server struct {
	catalog *alpc.Region // shared by every client, read-only to them

	mu       sync.Mutex
	sessions map[*alpc.Conn]*session
}

// session is what one client was granted.
type session struct {
	scratch *alpc.Region
	grants  []*alpc.Grant
}

func serve(ctx context.Context, port, socket string) error {
	catalog, err := alpc.NewRegion(catalogSize)
	if err != nil {
		return err
	}
	defer catalog.Close()
	b := catalog.Bytes()
	for i := 8; i < len(b); i++ {
		b[i] = byte(i * 31)
	}
	s := &server{catalog: catalog, sessions: make(map[*alpc.Conn]*session)}

	cfg := &alpc.Config{Handler: alpc.HandlerFunc(s.handle), AllowDirectAccess: true}
	l, err := listen(ctx, port, socket, cfg)
	if err != nil {
		return err
	}
	defer l.Close()
	log.Printf("server: published %s", describe(l))
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
			s.detach(context.Background(), conn) // the peer's mappings are gone with it
			_ = conn.Close()
		}()
	}
}

// handle serves the client's commands.
func (s *server) handle(ctx context.Context, req *alpc.Request) ([]byte, error) {
	conn := req.Conn()
	switch cmd := string(req.Payload()); cmd {
	case "attach":
		return s.attach(ctx, conn)
	case "check":
		// Read what the client wrote into the scratch region, in place:
		// no copy of it travelled in a message.
		sess := s.session(conn)
		if sess == nil {
			return nil, alpc.Errorf(alpc.CodeInvalidArgument, "not attached")
		}
		mem := sess.scratch.Bytes()
		msg, _, _ := bytes.Cut(mem[:replyOffset], []byte{0})
		log.Printf("server: client wrote %q into its scratch region", msg)
		copy(mem[replyOffset:], fmt.Appendf(nil, "server read %d bytes in place\x00", len(msg)))
		return []byte("ok"), nil
	case "bump":
		// Change the catalog under the clients' feet: they see it at once.
		b := s.catalog.Bytes()
		s.mu.Lock()
		v := catalogVersion(b) + 1
		binary.LittleEndian.PutUint64(b, v)
		s.mu.Unlock()
		return fmt.Appendf(nil, "%d", v), nil
	case "detach":
		s.detach(ctx, conn)
		return []byte("revoked"), nil
	default:
		return nil, alpc.Errorf(alpc.CodeInvalidArgument, "unknown command %q", cmd)
	}
}

// attach grants the catalog read-only and a fresh scratch region
// read-write, and tells the client their grant ids and the catalog's hash.
func (s *server) attach(ctx context.Context, conn *alpc.Conn) ([]byte, error) {
	scratch, err := alpc.NewRegion(scratchSize)
	if err != nil {
		return nil, err
	}
	// A read-only grant seals the catalog against new writable mappings for
	// good; the server's own mapping stays writable.
	ro, err := conn.Grant(ctx, s.catalog, alpc.ReadOnly)
	if err != nil {
		_ = scratch.Close()
		return nil, err
	}
	rw, err := conn.Grant(ctx, scratch, alpc.ReadWrite)
	if err != nil {
		_ = ro.Revoke(ctx)
		_ = scratch.Close()
		return nil, err
	}
	s.mu.Lock()
	s.sessions[conn] = &session{scratch: scratch, grants: []*alpc.Grant{ro, rw}}
	sum := sha256.Sum256(s.catalog.Bytes()[8:])
	s.mu.Unlock()
	// The grants travel before this reply on the same ordered channel, so
	// the client can look them up as soon as it reads the ids.
	return fmt.Appendf(nil, "%d %d %x", ro.ID(), rw.ID(), sum), nil
}

func (s *server) session(conn *alpc.Conn) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[conn]
}

// detach revokes the client's grants and frees its scratch region.
func (s *server) detach(ctx context.Context, conn *alpc.Conn) {
	s.mu.Lock()
	sess := s.sessions[conn]
	delete(s.sessions, conn)
	s.mu.Unlock()
	if sess == nil {
		return
	}
	for _, g := range sess.grants {
		_ = g.Revoke(ctx) // fails only if the connection is gone, which unmaps everything anyway
	}
	_ = sess.scratch.Close()
}

func client(ctx context.Context, port, socket string, wait time.Duration) error {
	cfg := &alpc.Config{AllowDirectAccess: true}
	conn, via, err := connect(ctx, port, socket, []byte("region client"), cfg, wait)
	if err != nil {
		return err
	}
	defer conn.Close()
	if !conn.Limits().DirectAccess {
		return errors.New("direct access is not allowed on this connection (in Kubernetes: set the ConnectionPort's messagePolicy.directAccess)")
	}
	log.Printf("client: connected to %s", via)

	reply, err := conn.Call(ctx, []byte("attach"))
	if err != nil {
		return err
	}
	var roID, rwID uint64
	var wantSum []byte
	if _, err := fmt.Sscanf(string(reply), "%d %d %x", &roID, &rwID, &wantSum); err != nil {
		return fmt.Errorf("attach reply %q: %w", reply, err)
	}
	catalog, err := conn.Region(roID)
	if err != nil {
		return err
	}
	scratch, err := conn.Region(rwID)
	if err != nil {
		return err
	}
	log.Printf("client: granted catalog (%d bytes, %v) and scratch (%d bytes, %v)", catalog.Len(), catalog.Access(), scratch.Len(), scratch.Access())

	// Read the catalog in place: Use lends the mapping itself for the
	// duration of a function (ReadAt copies). Both are safe against a
	// concurrent revocation: a revoked region reads as zeros, never faults.
	var sum [sha256.Size]byte
	if err := catalog.Use(func(mem []byte) { sum = sha256.Sum256(mem[8:]) }); err != nil {
		return err
	}
	if !bytes.Equal(sum[:], wantSum) {
		return fmt.Errorf("catalog sha256 %x, server says %x", sum, wantSum)
	}
	log.Printf("client: read the catalog in place; sha256 matches the server's")

	// Read-only means read-only: the library refuses the write (writing to
	// the memory Use lends would fault: the mapping is read-only).
	if _, err := catalog.WriteAt([]byte("x"), 8); !errors.Is(err, alpc.ErrReadOnly) {
		return fmt.Errorf("write to the read-only catalog: got %w, want ErrReadOnly", err)
	}
	log.Printf("client: writing the catalog is refused: %v", alpc.ErrReadOnly)

	// The server changes the catalog; the client sees the new version in
	// its own mapping without receiving it in a message.
	var before, after uint64
	if err := catalog.Use(func(mem []byte) { before = catalogVersion(mem) }); err != nil {
		return err
	}
	newVersion, err := conn.Call(ctx, []byte("bump"))
	if err != nil {
		return err
	}
	if err := catalog.Use(func(mem []byte) { after = catalogVersion(mem) }); err != nil {
		return err
	}
	if fmt.Sprint(after) != string(newVersion) {
		return fmt.Errorf("catalog version %d after the server set %s", after, newVersion)
	}
	log.Printf("client: catalog version %d -> %d, seen in place", before, after)

	// Read-write: the client writes, the server reads in place and writes
	// back, the client reads the answer.
	msg := fmt.Sprintf("hello from pid %d\x00", os.Getpid())
	if _, err := scratch.WriteAt([]byte(msg), 0); err != nil {
		return err
	}
	if _, err := conn.Call(ctx, []byte("check")); err != nil {
		return err
	}
	var answer []byte
	if err := scratch.Use(func(mem []byte) {
		answer, _, _ = bytes.Cut(mem[replyOffset:], []byte{0})
		answer = bytes.Clone(answer) // mem is valid only inside Use
	}); err != nil {
		return err
	}
	if want := fmt.Sprintf("server read %d bytes in place", len(msg)-1); string(answer) != want {
		return fmt.Errorf("scratch answer %q, want %q", answer, want)
	}
	log.Printf("client: wrote the scratch region; the server answered in it: %q", answer)

	// Revocation: after detach, the regions are unmapped on this side.
	if _, err := conn.Call(ctx, []byte("detach")); err != nil {
		return err
	}
	if _, err := catalog.ReadAt(make([]byte, 8), 0); !errors.Is(err, alpc.ErrNotGranted) {
		return fmt.Errorf("read after revocation: got %w, want ErrNotGranted", err)
	}
	if _, err := scratch.WriteAt([]byte("x"), 0); !errors.Is(err, alpc.ErrNotGranted) {
		return fmt.Errorf("write after revocation: got %w, want ErrNotGranted", err)
	}
	log.Printf("client: after revocation both regions are gone: %v", alpc.ErrNotGranted)
	log.Printf("region: all checks passed")
	return nil
}

// listen publishes the port: in a pod with the kalpc sidecar, the declared
// ConnectionPort port through the sidecar (alpc.Publish); elsewhere a
// socket at path socket (alpc.Listen). Either is an alpc.Acceptor, served
// the same way; cfg.Handler serves every accepted connection's requests.
func listen(ctx context.Context, port, socket string, cfg *alpc.Config) (alpc.Acceptor, error) {
	if os.Getenv(alpc.EnvSocket) != "" {
		return alpc.Publish(ctx, port, cfg)
	}
	return alpc.Listen(socket, cfg)
}

// describe says how clients reach the port, for the log.
func describe(a alpc.Acceptor) string {
	if _, brokered := a.(*alpc.Port); brokered {
		return "port " + a.Name() + " (through the kalpc sidecar)"
	}
	return "socket " + a.Name()
}

// connect connects to the port: through the kalpc sidecar by
// ConnectionPort name (alpc.Connect) in a pod that has one, else at its
// socket path (alpc.Dial). With Config.WaitForServer it waits up to wait
// for a server (a pod that has not published yet, or a process that has
// not started listening), so client and server may start in any order. It
// also says which way it went, for the log.
func connect(ctx context.Context, port, socket string, msg []byte, cfg *alpc.Config, wait time.Duration) (*alpc.Conn, string, error) {
	var c alpc.Config
	if cfg != nil {
		c = *cfg
	}
	c.WaitForServer = true
	ctx, cancel := context.WithTimeout(ctx, wait) // bounds the handshake only
	defer cancel()
	if os.Getenv(alpc.EnvSocket) != "" {
		conn, err := alpc.Connect(ctx, port, msg, &c)
		return conn, "port " + port + " (through the kalpc sidecar)", err
	}
	conn, err := alpc.Dial(ctx, socket, msg, &c)
	return conn, "socket " + socket, err
}
