package identity

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"

	"github.com/kalpc/kalpc/internal/podid"
	"github.com/kalpc/kalpc/internal/ttlcache"
)

// Audience is the audience of kalpc's projected tokens.
const Audience = "kalpc.io"

// Extra keys of a pod-bound ServiceAccount token, as TokenReview reports them.
const (
	ExtraPodName  = "authentication.kubernetes.io/pod-name"
	ExtraPodUID   = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName = "authentication.kubernetes.io/node-name"
)

// ErrUnauthenticated means the token is not a valid kalpc token of a pod:
// forged, expired, for another audience, not bound to a pod, of a deleted
// pod, or of a pod on another node.
var ErrUnauthenticated = errors.New("token not authenticated")

// ErrReview means the token could not be reviewed (API server unreachable
// or this sidecar not yet authorized); retrying may succeed.
var ErrReview = errors.New("token review failed")

// TokenFile is the path of a projected token. The kubelet replaces the
// file before the token expires, so it is read on every use.
type TokenFile string

// Token reads the current token.
func (f TokenFile) Token() (string, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return "", fmt.Errorf("failed to read token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty", string(f))
	}
	return t, nil
}

// Verifier verifies peers' tokens with TokenReview.
type Verifier struct {
	// Reviews creates TokenReviews.
	Reviews authnclient.TokenReviewInterface
	// NodeName, when set, refuses tokens of pods bound to another node
	// (when the API server reports the node). Defaults to no check.
	NodeName string
	// CacheTTL is how long a successful verdict is reused for the same
	// token, counted from when its review was sent: a token revoked (or
	// its pod deleted) is still accepted for at most CacheTTL. Defaults to
	// DefaultCacheTTL; negative disables the cache. Concurrent reviews of
	// one token are coalesced into one TokenReview either way.
	CacheTTL time.Duration

	once  sync.Once
	cache *ttlcache.Cache[[32]byte, podid.Identity]
}

// DefaultCacheTTL is Verifier.CacheTTL's default.
const DefaultCacheTTL = 10 * time.Second

// MaxCachedTokens bounds the verdicts a Verifier keeps.
const MaxCachedTokens = 4096

// Verify reviews token and returns the identity of the pod it is bound to.
// The error matches ErrUnauthenticated when the token is refused, and
// ErrReview when it could not be reviewed.
func (v *Verifier) Verify(ctx context.Context, token string) (podid.Identity, error) {
	v.once.Do(func() {
		ttl := v.CacheTTL
		if ttl == 0 {
			ttl = DefaultCacheTTL
		}
		v.cache = &ttlcache.Cache[[32]byte, podid.Identity]{TTL: ttl, MaxEntries: MaxCachedTokens}
	})
	return v.cache.Get(ctx, sha256.Sum256([]byte(token)), func(ctx context.Context) (podid.Identity, error) {
		tr, err := v.Reviews.Create(ctx, &authnv1.TokenReview{
			Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{Audience}},
		}, metav1.CreateOptions{})
		if err != nil {
			return podid.Identity{}, fmt.Errorf("%w: %w", ErrReview, err)
		}
		return v.identity(&tr.Status)
	})
}

func (v *Verifier) identity(st *authnv1.TokenReviewStatus) (podid.Identity, error) {
	if !st.Authenticated {
		reason := st.Error
		if reason == "" {
			reason = "the API server did not authenticate it"
		}
		return podid.Identity{}, fmt.Errorf("%w: %s", ErrUnauthenticated, reason)
	}
	if !slices.Contains(st.Audiences, Audience) {
		return podid.Identity{}, fmt.Errorf("%w: not valid for audience %s", ErrUnauthenticated, Audience)
	}
	rest, ok := strings.CutPrefix(st.User.Username, "system:serviceaccount:")
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || sa == "" {
		return podid.Identity{}, fmt.Errorf("%w: %q is not a ServiceAccount", ErrUnauthenticated, st.User.Username)
	}
	one := func(key string) (string, bool) {
		vals := st.User.Extra[key]
		if len(vals) != 1 || vals[0] == "" {
			return "", false
		}
		return vals[0], true
	}
	name, ok := one(ExtraPodName)
	uid, ok2 := one(ExtraPodUID)
	if !ok || !ok2 {
		return podid.Identity{}, fmt.Errorf("%w: token of %s/%s is not bound to a pod", ErrUnauthenticated, ns, sa)
	}
	id := podid.Identity{Namespace: ns, ServiceAccount: sa, PodName: name, PodUID: uid}
	if node, ok := one(ExtraNodeName); ok && v.NodeName != "" && node != v.NodeName {
		return podid.Identity{}, fmt.Errorf("%w: token of pod %s runs on node %s, not on this node %s", ErrUnauthenticated, id, node, v.NodeName)
	}
	return id, nil
}
