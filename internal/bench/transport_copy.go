package bench

import (
	"context"
	"errors"
)

// copyTransport is the one-copy floor: a single copy() of the payload inside
// the client process, with no IPC at all. Any transport that delivers bytes
// into the peer's own memory pays at least this.
type copyTransport struct{}

func (copyTransport) Info() Info {
	return Info{
		Name:      "copy",
		Label:     "in-process copy() (one-copy floor)",
		Path:      "one copy() between two buffers of the client process; no IPC",
		Placement: ClientOnly,
	}
}

func (copyTransport) Available(Env, int) error { return nil }

func (copyTransport) Serve(context.Context, Cell) (string, error) {
	return "", errors.New("copy transport has no server")
}

func (copyTransport) Dial(_ context.Context, cell Cell, _ string) (Client, error) {
	dst := make([]byte, cell.Size)
	touch(dst)
	return &copyClient{src: newPayload(cell.Size), dst: dst}, nil
}

type copyClient struct{ src, dst []byte }

func (c *copyClient) RoundTrip(context.Context) error {
	copy(c.dst, c.src)
	return nil
}

func (c *copyClient) Close() error { return nil }

// newPayload returns n bytes of a non-zero pattern, every page touched.
func newPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 1)
	}
	return b
}

// touch writes every page of b so that first-touch page faults are not
// measured.
func touch(b []byte) {
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
}
