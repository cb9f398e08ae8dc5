package httpauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	k8stesting "k8s.io/client-go/testing"
)

// The Guard's decisions against a real API server are tested in
// cmd/sidecar (TestDebugEndpointAuth); here, with a fake clientset, only
// what a real server cannot show on demand: the bound on reviews waiting
// at once, and the token and cache-key helpers.

func TestToken(t *testing.T) {
	for _, tc := range []struct {
		auth, kalpc, want string
	}{
		{"", "", ""},
		{"Bearer abc", "", "abc"},
		{"bearer  abc ", "", "abc"},
		{"Basic dXNlcjpwdw==", "", ""},
		{"", "Bearer xyz", "xyz"},
		{"Bearer abc", "Bearer xyz", "abc"},
		{"Bearer", "", ""},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		if tc.kalpc != "" {
			r.Header.Set(TokenHeader, tc.kalpc)
		}
		if got := Token(r); got != tc.want {
			t.Errorf("Token(Authorization %q, %s %q) = %q, want %q", tc.auth, TokenHeader, tc.kalpc, got, tc.want)
		}
	}
}

func TestAccessKeyDistinguishesUsersAndAttributes(t *testing.T) {
	keys := map[string]string{}
	for name, k := range map[string]string{
		"user a":          accessKey(authnv1.UserInfo{Username: "a"}, PodProxy("ns", "p")),
		"user a, group g": accessKey(authnv1.UserInfo{Username: "a", Groups: []string{"g"}}, PodProxy("ns", "p")),
		"user ag":         accessKey(authnv1.UserInfo{Username: "ag"}, PodProxy("ns", "p")),
		"other pod":       accessKey(authnv1.UserInfo{Username: "a"}, PodProxy("ns", "q")),
		"other ns":        accessKey(authnv1.UserInfo{Username: "a"}, PodProxy("ns2", "p")),
		"url":             accessKey(authnv1.UserInfo{Username: "a"}, NonResourceURL("/metrics")),
		"extra":           accessKey(authnv1.UserInfo{Username: "a", Extra: map[string]authnv1.ExtraValue{"k": {"v"}}}, PodProxy("ns", "p")),
	} {
		if other, dup := keys[k]; dup {
			t.Errorf("%s and %s share the cache key %q", name, other, k)
		}
		keys[k] = name
	}
}

// blockingReviews answers TokenReviews (authenticated) only once release
// is closed. The fake clientset cannot: it runs reactors under one lock.
type blockingReviews struct {
	authnclient.TokenReviewInterface
	release chan struct{}
	n       *atomic.Int32
}

func (b blockingReviews) Create(_ context.Context, tr *authnv1.TokenReview, _ metav1.CreateOptions) (*authnv1.TokenReview, error) {
	b.n.Add(1)
	<-b.release
	tr = tr.DeepCopy()
	tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "u"}}
	return tr, nil
}

func TestReviewsWaitingAreBounded(t *testing.T) {
	cs := fake.NewClientset()
	release := make(chan struct{})
	var reviews atomic.Int32
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		sar.Status.Allowed = true
		return true, sar, nil
	})
	g, err := New(Guard{TokenReviews: blockingReviews{release: release, n: &reviews}, AccessReviews: cs.AuthorizationV1().SubjectAccessReviews(), MaxInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	h := g.Protect(func(*http.Request) Attributes { return PodProxy("ns", "p") },
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	get := func(token string) int {
		r := httptest.NewRequest(http.MethodGet, "/debug/connections", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for _, tok := range []string{"t1", "t2"} {
		wg.Go(func() { codes <- get(tok) })
	}
	for deadline := time.Now().Add(10 * time.Second); reviews.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("%d reviews started, want 2", reviews.Load())
		}
	}
	if got := get("t3"); got != http.StatusTooManyRequests {
		t.Errorf("a third request while 2 reviews wait: %d, want 429", got)
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Errorf("a waiting request ended with %d, want 200", c)
		}
	}
	if got := get("t3"); got != http.StatusOK {
		t.Errorf("once the reviews ended: %d, want 200", got)
	}
}
