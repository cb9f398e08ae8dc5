// Package httpauth protects the sidecar's HTTP endpoints the way
// controller-runtime's secure metrics serving
// (sigs.k8s.io/controller-runtime/pkg/metrics/filters) does: the caller
// presents a bearer token, the API server authenticates it (TokenReview)
// and decides whether that user may do what the endpoint stands for
// (SubjectAccessReview).
//
// # Why not controller-runtime's filter
//
// filters.WithAuthenticationAndAuthorization authorizes only non-resource
// URLs (the request's path and verb), reads the token only from the
// Authorization header, and builds on k8s.io/apiserver's delegating
// authenticator and authorizer, a large dependency for a sidecar that runs
// in every injected pod. The debug endpoint needs a resource attribute
// (pods/proxy of the sidecar's own pod) and a second header, because the API
// server's pods/proxy removes Authorization after authenticating the caller
// with it; the rest is two API calls and two caches, written here.
//
// # Bounds
//
// Verdicts are cached by [ttlcache] (at most MaxCachedVerdicts entries per
// cache, each until CacheTTL after its review was sent; concurrent
// identical reviews share one request). A request whose verdicts are not
// cached needs a review slot: at most MaxInFlight requests wait for the API
// server at once, and more are answered 429 at once, so a flood of new
// tokens costs the API server at most MaxInFlight reviews at a time.
package httpauth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"

	"github.com/kalpc/kalpc/internal/ttlcache"
)

// TokenHeader carries the caller's bearer token ("Bearer TOKEN") when the
// Authorization header cannot: the API server's pods/proxy subresource
// authenticates the caller with Authorization and removes it before
// proxying, but passes other headers on. Authorization wins when both are
// present.
const TokenHeader = "Kalpc-Authorization"

// Defaults of Guard's fields.
const (
	DefaultCacheTTL    = 10 * time.Second
	DefaultMaxInFlight = 8
	MaxCachedVerdicts  = 1024
)

// Attributes is what a request asks to do, as a SubjectAccessReview
// states it: exactly one of Resource and NonResource is set.
type Attributes struct {
	Resource    *authzv1.ResourceAttributes
	NonResource *authzv1.NonResourceAttributes
}

// Guard authenticates and authorizes requests through the API server. Its
// zero value is not usable: set TokenReviews and AccessReviews. It is safe
// for concurrent use.
type Guard struct {
	// TokenReviews authenticates callers' tokens (required).
	TokenReviews authnclient.TokenReviewInterface
	// AccessReviews authorizes authenticated callers (required).
	AccessReviews authzclient.SubjectAccessReviewInterface
	// CacheTTL is how long a verdict (authenticated or not, allowed or not)
	// is reused, counted from when its review was sent: a revoked token or
	// a removed RoleBinding is honoured at most CacheTTL later (plus the API
	// server's own token cache). Defaults to DefaultCacheTTL.
	CacheTTL time.Duration
	// MaxInFlight bounds the requests waiting for a review at once.
	// Defaults to DefaultMaxInFlight.
	MaxInFlight int
	// Log receives refusals at debug level and review failures at warn.
	// Defaults to slog.Default().
	Log *slog.Logger

	ready bool // set by New
	slots chan struct{}
	authn *ttlcache.Cache[[32]byte, authnVerdict]
	authz *ttlcache.Cache[string, bool]
}

type authnVerdict struct {
	user   authnv1.UserInfo
	ok     bool
	reason string
}

// New checks g's required fields, applies the defaults and returns g.
func New(g Guard) (*Guard, error) {
	if g.TokenReviews == nil || g.AccessReviews == nil {
		return nil, errors.New("httpauth: TokenReviews and AccessReviews are required")
	}
	if g.CacheTTL == 0 {
		g.CacheTTL = DefaultCacheTTL
	}
	if g.MaxInFlight <= 0 {
		g.MaxInFlight = DefaultMaxInFlight
	}
	if g.Log == nil {
		g.Log = slog.Default()
	}
	g.slots = make(chan struct{}, g.MaxInFlight)
	g.authn = &ttlcache.Cache[[32]byte, authnVerdict]{TTL: g.CacheTTL, MaxEntries: MaxCachedVerdicts}
	g.authz = &ttlcache.Cache[string, bool]{TTL: g.CacheTTL, MaxEntries: MaxCachedVerdicts}
	g.ready = true
	return &g, nil
}

// Token returns the bearer token of r: from Authorization, else from
// TokenHeader; "" when there is none.
func Token(r *http.Request) string {
	for _, h := range []string{"Authorization", TokenHeader} {
		if v := r.Header.Get(h); v != "" {
			scheme, tok, ok := strings.Cut(v, " ")
			if ok && strings.EqualFold(scheme, "Bearer") {
				return strings.TrimSpace(tok)
			}
		}
	}
	return ""
}

// Protect serves next only to callers that the API server authenticates
// and allows attrs(r): 401 without a valid token, 403 when not allowed,
// 429 when MaxInFlight reviews are already waiting, 503 when the API
// server cannot be asked.
func (g *Guard) Protect(attrs func(*http.Request) Attributes, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, msg := g.check(r, attrs(r))
		if status != http.StatusOK {
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="kalpc-sidecar"`)
			}
			if status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "1")
			}
			http.Error(w, msg, status)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (g *Guard) check(r *http.Request, attrs Attributes) (int, string) {
	if !g.ready {
		return http.StatusInternalServerError, "httpauth: Guard not created with New"
	}
	token := Token(r)
	if token == "" {
		return http.StatusUnauthorized, fmt.Sprintf("Unauthorized: a bearer token is required (Authorization or %s header)", TokenHeader)
	}
	select {
	case g.slots <- struct{}{}:
		defer func() { <-g.slots }()
	default:
		return http.StatusTooManyRequests, "Too many requests waiting for the API server; retry"
	}
	ctx := r.Context()
	v, err := g.authn.Get(ctx, sha256.Sum256([]byte(token)), func(ctx context.Context) (authnVerdict, error) {
		tr, err := g.TokenReviews.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
		if err != nil {
			return authnVerdict{}, err
		}
		return authnVerdict{user: tr.Status.User, ok: tr.Status.Authenticated, reason: tr.Status.Error}, nil
	})
	if err != nil {
		g.Log.Warn("cannot review a token of an HTTP caller", "path", r.URL.Path, "error", err)
		return http.StatusServiceUnavailable, "Service Unavailable: cannot authenticate the request"
	}
	if !v.ok {
		g.Log.Debug("HTTP caller not authenticated", "path", r.URL.Path, "reason", v.reason)
		return http.StatusUnauthorized, "Unauthorized: the token is not valid"
	}
	allowed, err := g.authz.Get(ctx, accessKey(v.user, attrs), func(ctx context.Context) (bool, error) {
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: v.user.Username, UID: v.user.UID, Groups: v.user.Groups,
			ResourceAttributes: attrs.Resource, NonResourceAttributes: attrs.NonResource,
		}}
		if len(v.user.Extra) > 0 {
			sar.Spec.Extra = make(map[string]authzv1.ExtraValue, len(v.user.Extra))
			for k, val := range v.user.Extra {
				sar.Spec.Extra[k] = authzv1.ExtraValue(val)
			}
		}
		res, err := g.AccessReviews.Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		return res.Status.Allowed && !res.Status.Denied, nil
	})
	if err != nil {
		g.Log.Warn("cannot authorize an HTTP caller", "path", r.URL.Path, "user", v.user.Username, "error", err)
		return http.StatusServiceUnavailable, "Service Unavailable: cannot authorize the request"
	}
	if !allowed {
		g.Log.Debug("HTTP caller not authorized", "path", r.URL.Path, "user", v.user.Username)
		return http.StatusForbidden, fmt.Sprintf("Forbidden: %q may not %s", v.user.Username, describe(attrs))
	}
	return http.StatusOK, ""
}

// accessKey identifies a SubjectAccessReview: the user and the attributes.
func accessKey(u authnv1.UserInfo, a Attributes) string {
	var b strings.Builder
	field := func(s string) { fmt.Fprintf(&b, "%d:%s;", len(s), s) }
	field(u.Username)
	field(u.UID)
	for _, g := range u.Groups {
		field(g)
	}
	b.WriteString("|")
	keys := make([]string, 0, len(u.Extra))
	for k := range u.Extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		field(k)
		for _, v := range u.Extra[k] {
			field(v)
		}
		b.WriteString(",")
	}
	b.WriteString("|")
	if r := a.Resource; r != nil {
		for _, s := range []string{"r", r.Namespace, r.Verb, r.Group, r.Version, r.Resource, r.Subresource, r.Name} {
			field(s)
		}
	}
	if n := a.NonResource; n != nil {
		for _, s := range []string{"n", n.Path, n.Verb} {
			field(s)
		}
	}
	return b.String()
}

func describe(a Attributes) string {
	if r := a.Resource; r != nil {
		res := r.Resource
		if r.Subresource != "" {
			res += "/" + r.Subresource
		}
		return fmt.Sprintf("%s %s %s/%s", r.Verb, res, r.Namespace, r.Name)
	}
	if n := a.NonResource; n != nil {
		return fmt.Sprintf("%s %s", n.Verb, n.Path)
	}
	return "do this"
}

// PodProxy is the attributes of get on pods/proxy of one pod: whoever may
// reach every port of that pod through the API server may read the
// endpoint, which grants nothing they could not already reach.
func PodProxy(namespace, name string) Attributes {
	return Attributes{Resource: &authzv1.ResourceAttributes{
		Namespace: namespace, Name: name, Verb: "get", Resource: "pods", Subresource: "proxy",
	}}
}

// NonResourceURL is the attributes of get on a non-resource URL such as
// /metrics, which Prometheus's usual ClusterRole grants.
func NonResourceURL(path string) Attributes {
	return Attributes{NonResource: &authzv1.NonResourceAttributes{Path: path, Verb: "get"}}
}
