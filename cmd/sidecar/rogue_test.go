package main

import (
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/internal/sidecar/nodedir"
)

type clientKey = types.NamespacedName

func podObject(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var p corev1.Pod
	if err := k8s.Get(t.Context(), clientKey{Namespace: ns, Name: name}, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// rogueServer is a hostile process with access to the node directory: it
// listens on a planted endpoint and presents a token it holds.
type rogueServer struct {
	ls    []*nodedir.Listener
	token atomic.Bool
	wg    sync.WaitGroup
}

// plantServer plants an endpoint at path presenting token. With
// identityOf set, it also holds that pod's identity socket, as a sidecar
// would.
func plantServer(t *testing.T, path, token string, identityOf ...string) *rogueServer {
	t.Helper()
	r := &rogueServer{}
	for _, uid := range identityOf {
		l, err := nodedir.Listen(nodedir.Dir{Root: dirOf(path)}.IdentityPath(uid))
		if err != nil {
			t.Fatal(err)
		}
		r.ls = append(r.ls, l)
		go nodedir.ServeIdentity(l)
	}
	l, err := nodedir.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	r.ls = append(r.ls, l)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = ctl.Write(c, &ctl.Message{Type: ctl.TypePeerHello, Token: token}, nil)
			if m, f, err := ctl.Read(c); err == nil {
				if f != nil {
					_ = f.Close()
				}
				if m.Type == ctl.TypePeerConnect {
					r.token.Store(true)
				}
			}
			_ = c.Close()
		}
	}()
	t.Cleanup(r.Close)
	return r
}

func (r *rogueServer) sawToken() bool { return r.token.Load() }

func (r *rogueServer) Close() {
	for _, l := range r.ls {
		_ = l.Close()
	}
	r.ls = nil
	r.wg.Wait()
}

// dirOf returns the node directory root of an endpoint path
// (<root>/ports/<ns>/<name>/<uid>.sock).
func dirOf(endpoint string) string {
	d := endpoint
	for range 4 {
		d = filepath.Dir(d)
	}
	return d
}

// plantSilent plants an endpoint at path that accepts connections and
// never answers (holding them open until the test ends).
func plantSilent(t *testing.T, path string) {
	t.Helper()
	l, err := nodedir.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
}
