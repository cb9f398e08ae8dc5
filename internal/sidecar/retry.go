package sidecar

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// forbiddenRetrier retries 403 answers during the sidecar's first
// ForbiddenGrace: the operator binds the sidecar's ClusterRole shortly
// after the pod is created.
type forbiddenRetrier struct {
	s *Sidecar
	r client.Reader
}

func (f forbiddenRetrier) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	return f.s.retryForbidden(ctx, func() error { return f.r.Get(ctx, key, obj, opts...) })
}

func (f forbiddenRetrier) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return f.s.retryForbidden(ctx, func() error { return f.r.List(ctx, list, opts...) })
}

func (s *Sidecar) retryForbidden(ctx context.Context, op func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := op()
		if !apierrors.IsForbidden(err) || time.Since(s.started) > s.opts.ForbiddenGrace {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}
