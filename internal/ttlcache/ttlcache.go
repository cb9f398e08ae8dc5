// Package ttlcache is a bounded cache of API verdicts (TokenReviews,
// SubjectAccessReviews, pod reads) whose concurrent misses for one key are
// coalesced into one request.
//
// # Bounds
//
// An entry is used until TTL after the request that produced it was sent,
// never longer: a verdict the API server would change (a deleted pod, a
// revoked token, a removed RoleBinding) is believed at most TTL after the
// change. Errors are never stored; callers waiting on a request that fails
// all get its error. At most MaxEntries entries are kept: a full cache first
// drops its expired entries, then arbitrary ones, so a peer sending distinct
// keys costs requests, not memory. At most one request per key is in flight.
package ttlcache

import (
	"context"
	"sync"
	"time"
)

// Defaults of Cache's fields.
const (
	DefaultMaxEntries   = 4096
	DefaultFetchTimeout = 10 * time.Second
)

// Cache maps keys to values fetched by Get's fetch function. The zero value
// with TTL set is ready to use; it is safe for concurrent use.
type Cache[K comparable, V any] struct {
	// TTL is how long a fetched value is used, counted from when its fetch
	// started. Zero or negative disables caching (concurrent misses are still
	// coalesced).
	TTL time.Duration
	// MaxEntries bounds the entries kept. Defaults to DefaultMaxEntries.
	MaxEntries int
	// FetchTimeout bounds one fetch, which runs on behalf of every caller
	// waiting for it and so is not cancelled when the first caller gives
	// up. Defaults to DefaultFetchTimeout.
	FetchTimeout time.Duration
	// Now returns the current time. Defaults to time.Now.
	Now func() time.Time

	mu       sync.Mutex
	entries  map[K]entry[V]
	inflight map[K]*call[V]
}

type entry[V any] struct {
	val     V
	expires time.Time
}

type call[V any] struct {
	done chan struct{}
	val  V
	err  error
}

func (c *Cache[K, V]) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Get returns the value of key: a stored one that has not expired, or the
// result of fetch, shared with every concurrent Get of the same key. fetch
// runs without ctx's cancellation but with its values and with
// FetchTimeout; Get returns ctx's error if ctx ends first.
func (c *Cache[K, V]) Get(ctx context.Context, key K, fetch func(context.Context) (V, error)) (V, error) {
	c.mu.Lock()
	if e, ok := c.entries[key]; ok {
		if c.now().Before(e.expires) {
			c.mu.Unlock()
			return e.val, nil
		}
		delete(c.entries, key)
	}
	cl, ok := c.inflight[key]
	if !ok {
		cl = &call[V]{done: make(chan struct{})}
		if c.inflight == nil {
			c.inflight = make(map[K]*call[V])
		}
		c.inflight[key] = cl
		go c.run(ctx, key, cl, fetch)
	}
	c.mu.Unlock()
	select {
	case <-cl.done:
		return cl.val, cl.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

// run fetches key for every caller waiting on cl.
func (c *Cache[K, V]) run(ctx context.Context, key K, cl *call[V], fetch func(context.Context) (V, error)) {
	timeout := c.FetchTimeout
	if timeout <= 0 {
		timeout = DefaultFetchTimeout
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	started := c.now()
	cl.val, cl.err = fetch(fctx)
	c.mu.Lock()
	delete(c.inflight, key)
	if cl.err == nil && c.TTL > 0 {
		c.storeLocked(key, entry[V]{val: cl.val, expires: started.Add(c.TTL)})
	}
	c.mu.Unlock()
	close(cl.done)
}

func (c *Cache[K, V]) storeLocked(key K, e entry[V]) {
	limit := c.MaxEntries
	if limit <= 0 {
		limit = DefaultMaxEntries
	}
	if c.entries == nil {
		c.entries = make(map[K]entry[V])
	}
	if _, ok := c.entries[key]; !ok && len(c.entries) >= limit {
		now := c.now()
		for k, old := range c.entries {
			if !now.Before(old.expires) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < limit {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = e
}

// Len returns the number of entries stored, expired or not.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Forget drops key's entry, so that the next Get fetches it.
func (c *Cache[K, V]) Forget(key K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, key)
}
