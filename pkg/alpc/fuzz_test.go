//go:build linux && !kalpc_stub

package alpc

import (
	"context"
	"testing"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc/internal/sys"
	"github.com/kalpc/kalpc/pkg/alpc/internal/wire"
)

// FuzzConnReceive sends arbitrary datagrams to a live Conn over a real
// socket. Whatever arrives, the Conn must not panic or hang: it serves
// valid messages and ends with a protocol error on invalid ones.
func FuzzConnReceive(f *testing.F) {
	f.Add(header(wire.TypeRequest, 0, 1, []byte("echo")), header(wire.TypeCancel, 0, 1, nil))
	f.Add(header(wire.TypeRequest, wire.FlagOneWay, 1, []byte("x")), header(wire.TypeReply, 0, 1, nil))
	f.Add([]byte("garbage"), []byte{})
	f.Add(goAwayMsg(wire.GoAwayAnnounce), header(wire.TypeRequest, 0, 1, []byte("after go-away")))
	cfg, _ := (&Config{Handler: HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
		return r.Payload(), nil
	})}).withDefaults()
	f.Fuzz(func(t *testing.T, first, second []byte) {
		a, b, err := sys.SeqpacketPair()
		if err != nil {
			t.Fatal(err)
		}
		defer sys.Close(b)
		c := newConn(a, &cfg, cfg.params())
		defer c.Close()
		for _, m := range [][]byte{first, second} {
			if len(m) == 0 {
				continue
			}
			if err := sys.Sendmsg(b, m, nil, nil, sys.MsgNoSignal|sys.MsgDontWait); err != nil {
				break
			}
		}
		_ = sys.Shutdown(b)
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Conn did not end after its peer hung up")
		}
	})
}
