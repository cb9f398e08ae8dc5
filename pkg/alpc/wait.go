package alpc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// The back-off between attempts of a Dial or Connect that waits for a
// server (Config.WaitForServer): from waitMinBackoff, doubling, to
// waitMaxBackoff, each jittered down by up to half so that clients started
// together do not retry together. A server published while a client waits
// is found within waitMaxBackoff; each attempt costs a connect on the
// socket (Dial) or one request to the pod's broker (Connect).
const (
	waitMinBackoff = 20 * time.Millisecond
	waitMaxBackoff = 500 * time.Millisecond
)

// untilServer runs attempt once, or, with wait, again after a back-off for
// as long as it fails with noServer and ctx has not ended. When ctx ends
// first, the error wraps both the last attempt's error and ctx's.
func untilServer(ctx context.Context, wait bool, noServer error, attempt func() (*Conn, error)) (*Conn, error) {
	start := time.Now()
	backoff := waitMinBackoff
	for {
		c, err := attempt()
		if err == nil || !wait || !errors.Is(err, noServer) {
			return c, err
		}
		t := time.NewTimer(backoff - rand.N(backoff/2))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w; gave up waiting for a server after %v: %w", err, time.Since(start).Round(time.Millisecond), ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, waitMaxBackoff)
	}
}
