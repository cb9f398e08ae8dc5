package ttlcache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A pure helper: a fake clock and fetch functions are enough here; the
// sidecar's tests count the real requests an API server receives.

func TestConcurrentMissesShareOneFetch(t *testing.T) {
	c := &Cache[string, int]{TTL: time.Minute}
	var fetches atomic.Int32
	release := make(chan struct{})
	fetch := func(context.Context) (int, error) {
		fetches.Add(1)
		<-release
		return 42, nil
	}
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			v, err := c.Get(t.Context(), "k", fetch)
			if err == nil && v != 42 {
				err = errors.New("wrong value")
			}
			errs <- err
		})
	}
	// Let every Get find the call in flight before it completes.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		started := c.inflight["k"] != nil
		c.mu.Unlock()
		if started || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := fetches.Load(); got != 1 {
		t.Errorf("%d concurrent Gets of a cold key made %d fetches, want 1", n, got)
	}
	if _, err := c.Get(t.Context(), "k", fetch); err != nil || fetches.Load() != 1 {
		t.Errorf("a warm Get fetched again (%d fetches, err %v)", fetches.Load(), err)
	}
}

func TestEntryExpiresTTLAfterItsFetchStarted(t *testing.T) {
	now := time.Unix(1000, 0)
	c := &Cache[string, int]{TTL: 10 * time.Second, Now: func() time.Time { return now }}
	calls := 0
	fetch := func(context.Context) (int, error) {
		calls++
		now = now.Add(3 * time.Second) // a slow API server
		return calls, nil
	}
	if v, _ := c.Get(t.Context(), "k", fetch); v != 1 {
		t.Fatalf("first Get = %d", v)
	}
	now = now.Add(6*time.Second + 999*time.Millisecond) // 9.999 s after the fetch started
	if v, _ := c.Get(t.Context(), "k", fetch); v != 1 {
		t.Errorf("Get within the TTL fetched again: %d", v)
	}
	now = now.Add(time.Millisecond) // exactly TTL after the fetch started
	if v, _ := c.Get(t.Context(), "k", fetch); v != 2 {
		t.Errorf("Get TTL after the fetch started used the old entry: %d", v)
	}
}

func TestErrorsAreNotStored(t *testing.T) {
	c := &Cache[string, int]{TTL: time.Minute}
	boom := errors.New("boom")
	if _, err := c.Get(t.Context(), "k", func(context.Context) (int, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if v, err := c.Get(t.Context(), "k", func(context.Context) (int, error) { return 7, nil }); err != nil || v != 7 {
		t.Errorf("after an error: %d, %v; want a new fetch", v, err)
	}
}

func TestBounded(t *testing.T) {
	c := &Cache[int, int]{TTL: time.Minute, MaxEntries: 8}
	for i := range 1000 {
		if _, err := c.Get(t.Context(), i, func(context.Context) (int, error) { return i, nil }); err != nil {
			t.Fatal(err)
		}
		if c.Len() > 8 {
			t.Fatalf("%d entries after %d keys, want at most 8", c.Len(), i+1)
		}
	}
}

func TestCallerGivingUpDoesNotCancelTheSharedFetch(t *testing.T) {
	c := &Cache[string, int]{TTL: time.Minute}
	started, release := make(chan struct{}), make(chan struct{})
	fetch := func(ctx context.Context) (int, error) {
		close(started)
		select {
		case <-release:
			return 1, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() { _, err := c.Get(ctx, "k", fetch); first <- err }()
	<-started
	second := make(chan error, 1)
	go func() {
		_, err := c.Get(t.Context(), "k", func(context.Context) (int, error) { return 0, errors.New("second fetch") })
		second <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("the caller that gave up got %v, want context.Canceled", err)
	}
	close(release)
	if err := <-second; err != nil {
		t.Errorf("the caller still waiting got %v, want the shared fetch's value", err)
	}
}

func TestFetchTimeout(t *testing.T) {
	c := &Cache[string, int]{TTL: time.Minute, FetchTimeout: 20 * time.Millisecond}
	_, err := c.Get(t.Context(), "k", func(ctx context.Context) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the fetch's deadline", err)
	}
}
