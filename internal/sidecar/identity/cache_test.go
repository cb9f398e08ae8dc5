package identity_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kalpc/kalpc/internal/sidecar/identity"
	"github.com/kalpc/kalpc/internal/sidecar/policy"
	"github.com/kalpc/kalpc/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.Stop()
	return m.Run()
}

// requests counts the requests a client sends to the API server, by
// "METHOD path".
type requests struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *requests) count(method, path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[method+" "+path]
}

type countingTransport struct {
	r  *requests
	rt http.RoundTripper
}

func (c countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.r.mu.Lock()
	c.r.n[req.Method+" "+req.URL.Path]++
	c.r.mu.Unlock()
	return c.rt.RoundTrip(req)
}

// countingConfig is the admin's configuration with every request counted.
func countingConfig() (*rest.Config, *requests) {
	r := &requests{n: map[string]int{}}
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{r: r, rt: rt} })
	return cfg, r
}

// podWithToken creates a ServiceAccount and a pod bound to node-a and
// returns the pod and a kalpc token bound to it, as the kubelet projects it.
func podWithToken(t *testing.T, ns, name string) (*corev1.Pod, string) {
	t.Helper()
	ctx := t.Context()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if err := env.Client.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	po := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: name, AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "app", Image: "example/app"}}},
	}
	if err := env.Client.Create(ctx, po); err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(env.Config)
	exp := int64(600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{identity.Audience}, ExpirationSeconds: &exp,
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: po.Name, UID: po.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return po, tr.Status.Token
}

const tokenReviews = "/apis/authentication.k8s.io/v1/tokenreviews"

// concurrently runs f n times at once and returns the errors.
func concurrently(n int, f func() error) []error {
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = f()
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// TestConcurrentVerificationsShareOneTokenReview: a burst of connects with
// one cold token (a client pod's first connects) costs one TokenReview and
// one pod read, not one per connect.
func TestConcurrentVerificationsShareOneTokenReview(t *testing.T) {
	ns := testenv.Namespace(t, env.Client, "coalesce", nil)
	po, token := podWithToken(t, ns, "client")
	cfg, reqs := countingConfig()
	v := &identity.Verifier{Reviews: kubernetes.NewForConfigOrDie(cfg).AuthenticationV1().TokenReviews(), NodeName: "node-a"}
	direct, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	pods := &policy.CachedPods{Client: direct}

	const n = 50
	for _, err := range concurrently(n, func() error {
		id, err := v.Verify(t.Context(), token)
		if err != nil {
			return err
		}
		if id.PodName != po.Name || id.PodUID != string(po.UID) || id.Namespace != ns {
			return fmt.Errorf("verified %v, want pod %s/%s", id, ns, po.Name)
		}
		got, err := pods.Get(t.Context(), id.Namespace, id.PodName)
		if err == nil && got.UID != po.UID {
			err = fmt.Errorf("pod read has UID %s, want %s", got.UID, po.UID)
		}
		return err
	}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := reqs.count(http.MethodPost, tokenReviews); got != 1 {
		t.Errorf("%d concurrent verifications of one cold token sent %d TokenReviews, want 1", n, got)
	}
	podPath := "/api/v1/namespaces/" + ns + "/pods/" + po.Name
	if got := reqs.count(http.MethodGet, podPath); got != 1 {
		t.Errorf("%d concurrent reads of one pod sent %d GETs, want 1", n, got)
	}

	// Distinct tokens are not coalesced with each other: each is reviewed.
	_, other := podWithToken(t, ns, "other")
	before := reqs.count(http.MethodPost, tokenReviews)
	for _, err := range concurrently(10, func() error { _, err := v.Verify(t.Context(), other); return err }) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := reqs.count(http.MethodPost, tokenReviews) - before; got != 1 {
		t.Errorf("10 concurrent verifications of a second token sent %d TokenReviews, want 1", got)
	}
}

// apiServerTokenCacheTTL is how long kube-apiserver itself keeps a
// successful token authentication (its TokenSuccessCacheTTL, not a flag):
// a TokenReview may accept a revoked token for that long.
const apiServerTokenCacheTTL = 10 * time.Second

// TestCacheBound: a verdict cannot outlive a deleted pod or a revoked token
// by more than the cache's TTL, counted from when its review was sent; end
// to end, a revoked token is refused within the API server's own cache TTL
// plus ours.
func TestCacheBound(t *testing.T) {
	const ttl = 1500 * time.Millisecond
	cs := kubernetes.NewForConfigOrDie(env.Config)
	for _, tc := range []struct {
		name   string
		revoke func(ctx context.Context, ns string, po *corev1.Pod) error
	}{
		{"pod deleted", func(ctx context.Context, ns string, po *corev1.Pod) error {
			zero := int64(0)
			return cs.CoreV1().Pods(ns).Delete(ctx, po.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		}},
		{"serviceaccount deleted", func(ctx context.Context, ns string, po *corev1.Pod) error {
			return cs.CoreV1().ServiceAccounts(ns).Delete(ctx, po.Spec.ServiceAccountName, metav1.DeleteOptions{})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := testenv.Namespace(t, env.Client, "bound", nil)
			po, token := podWithToken(t, ns, "client")
			cfg, reqs := countingConfig()
			v := &identity.Verifier{Reviews: kubernetes.NewForConfigOrDie(cfg).AuthenticationV1().TokenReviews(), CacheTTL: ttl}
			direct, err := client.New(cfg, client.Options{Scheme: env.Scheme})
			if err != nil {
				t.Fatal(err)
			}
			pods := &policy.CachedPods{Client: direct, TTL: ttl}
			podPath := "/api/v1/namespaces/" + ns + "/pods/" + po.Name
			sent := time.Now() // before the review and the read are sent
			if _, err := v.Verify(t.Context(), token); err != nil {
				t.Fatal(err)
			}
			readSent := time.Now()
			if _, err := pods.Get(t.Context(), ns, po.Name); err != nil {
				t.Fatal(err)
			}
			if err := tc.revoke(t.Context(), ns, po); err != nil {
				t.Fatal(err)
			}
			revoked := time.Now()
			// Within the TTL the cached verdict and pod are used: no request.
			if time.Since(sent) < ttl-300*time.Millisecond {
				_, verr := v.Verify(t.Context(), token)
				_, gerr := pods.Get(t.Context(), ns, po.Name)
				if verr != nil || gerr != nil || reqs.count(http.MethodPost, tokenReviews) != 1 || reqs.count(http.MethodGet, podPath) != 1 {
					t.Errorf("within the TTL: %v, %v, %d reviews, %d reads; want the cached verdict and pod",
						verr, gerr, reqs.count(http.MethodPost, tokenReviews), reqs.count(http.MethodGet, podPath))
				}
			}
			// TTL after the review was sent, the entries are gone: the next
			// verification and read ask the API server again.
			time.Sleep(time.Until(readSent.Add(ttl))) // readSent is after sent
			_, _ = v.Verify(t.Context(), token)
			_, gerr := pods.Get(t.Context(), ns, po.Name)
			if got := reqs.count(http.MethodPost, tokenReviews); got != 2 {
				t.Errorf("TTL after the first review: %d TokenReviews in all, want 2 (the verdict outlived its TTL)", got)
			}
			if got := reqs.count(http.MethodGet, podPath); got != 2 {
				t.Errorf("TTL after the first read: %d GETs in all, want 2 (the pod outlived its TTL)", got)
			}
			if tc.name == "pod deleted" && !apierrors.IsNotFound(gerr) {
				t.Errorf("pod read TTL after the first read, after its deletion: %v, want NotFound", gerr)
			}
			// End to end: refused within the API server's own success cache
			// plus our TTL of the revocation.
			bound := revoked.Add(apiServerTokenCacheTTL + ttl + time.Second)
			for {
				_, err := v.Verify(t.Context(), token)
				if errors.Is(err, identity.ErrUnauthenticated) {
					t.Logf("revoked token refused %v after the revocation (bound %v)", time.Since(revoked).Round(time.Millisecond), apiServerTokenCacheTTL+ttl)
					break
				}
				if time.Now().After(bound) {
					t.Fatalf("revoked token still accepted %v after the revocation: %v", time.Since(revoked).Round(time.Millisecond), err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// TestRefusalsAreNotCached: a refused token is reviewed again each time it
// is presented; only successful verdicts are kept.
func TestRefusalsAreNotCached(t *testing.T) {
	cfg, reqs := countingConfig()
	v := &identity.Verifier{Reviews: kubernetes.NewForConfigOrDie(cfg).AuthenticationV1().TokenReviews()}
	for range 3 {
		if _, err := v.Verify(t.Context(), "not-a-token"); !errors.Is(err, identity.ErrUnauthenticated) || !strings.Contains(err.Error(), "not authenticated") {
			t.Fatalf("forged token: %v, want ErrUnauthenticated", err)
		}
	}
	if got := reqs.count(http.MethodPost, tokenReviews); got != 3 {
		t.Errorf("3 sequential verifications of a refused token sent %d TokenReviews, want 3", got)
	}
}
