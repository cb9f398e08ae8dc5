package identity

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"

	"github.com/kalpc/kalpc/internal/podid"
)

// reviewed is the status a TokenReview reports for a pod-bound kalpc
// token of apps/client-0 on node-a; each case of TestVerdict changes it.
func reviewed() *authnv1.TokenReviewStatus {
	return &authnv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{"other", Audience},
		User: authnv1.UserInfo{
			Username: "system:serviceaccount:apps:client",
			Extra: map[string]authnv1.ExtraValue{
				ExtraPodName:  {"client-0"},
				ExtraPodUID:   {"u-client"},
				ExtraNodeName: {"node-a"},
			},
		},
	}
}

// TestVerdict turns TokenReview answers into identities or refusals. The
// API server's side (real tokens, bound pods, deletion) is tested against
// envtest in cache_test.go; this is the reading of its answer.
func TestVerdict(t *testing.T) {
	want := podid.Identity{Namespace: "apps", ServiceAccount: "client", PodName: "client-0", PodUID: "u-client"}
	cases := []struct {
		name     string
		node     string // Verifier.NodeName
		change   func(*authnv1.TokenReviewStatus)
		refusal  string // what the error says, when refused
		accepted bool
	}{
		{name: "pod-bound token on this node", node: "node-a", change: func(*authnv1.TokenReviewStatus) {}, accepted: true},
		{name: "no node check configured", change: func(st *authnv1.TokenReviewStatus) { st.User.Extra[ExtraNodeName] = authnv1.ExtraValue{"node-b"} }, accepted: true},
		{name: "node not reported", node: "node-a", change: func(st *authnv1.TokenReviewStatus) { delete(st.User.Extra, ExtraNodeName) }, accepted: true},
		{name: "pod on another node", node: "node-a", change: func(st *authnv1.TokenReviewStatus) { st.User.Extra[ExtraNodeName] = authnv1.ExtraValue{"node-b"} },
			refusal: "token of pod apps/client-0 (serviceaccount client, uid u-client) runs on node node-b, not on this node node-a"},
		{name: "not authenticated, with the API server's reason", change: func(st *authnv1.TokenReviewStatus) { st.Authenticated, st.Error = false, "token expired" },
			refusal: "token expired"},
		{name: "not authenticated, no reason", change: func(st *authnv1.TokenReviewStatus) { st.Authenticated = false },
			refusal: "the API server did not authenticate it"},
		{name: "other audience", change: func(st *authnv1.TokenReviewStatus) { st.Audiences = []string{"api"} },
			refusal: "not valid for audience kalpc.io"},
		{name: "a user, not a ServiceAccount", change: func(st *authnv1.TokenReviewStatus) { st.User.Username = "alice" },
			refusal: `"alice" is not a ServiceAccount`},
		{name: "ServiceAccount without a name", change: func(st *authnv1.TokenReviewStatus) { st.User.Username = "system:serviceaccount:apps:" },
			refusal: "is not a ServiceAccount"},
		{name: "not bound to a pod", change: func(st *authnv1.TokenReviewStatus) { st.User.Extra = nil },
			refusal: "token of apps/client is not bound to a pod"},
		{name: "two pod names", change: func(st *authnv1.TokenReviewStatus) { st.User.Extra[ExtraPodName] = authnv1.ExtraValue{"a", "b"} },
			refusal: "not bound to a pod"},
		{name: "empty pod uid", change: func(st *authnv1.TokenReviewStatus) { st.User.Extra[ExtraPodUID] = authnv1.ExtraValue{""} },
			refusal: "not bound to a pod"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := reviewed()
			tc.change(st)
			v := &Verifier{NodeName: tc.node}
			id, err := v.identity(st)
			if tc.accepted {
				if err != nil || id != want {
					t.Fatalf("identity = %v, %v; want %v", id, err, want)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.refusal) {
				t.Fatalf("err = %v, want ErrUnauthenticated saying %q", err, tc.refusal)
			}
			if id != (podid.Identity{}) {
				t.Errorf("a refused token yields identity %v", id)
			}
		})
	}
}

// TestTokenFile reads the projected token on every use: the kubelet
// rotates it by replacing the file.
func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	f := TokenFile(path)
	if _, err := f.Token(); err == nil || !os.IsNotExist(errors.Unwrap(err)) {
		t.Errorf("missing file: err = %v, want one wrapping not-exist", err)
	}
	if err := os.WriteFile(path, []byte(" \n\t"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Token(); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("blank file: err = %v, want 'is empty'", err)
	}
	for _, tok := range []string{"first.jwt", "rotated.jwt"} {
		// Replace the file as the kubelet does (a new file renamed in).
		tmp := filepath.Join(dir, "new")
		if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		if got, err := f.Token(); err != nil || got != tok {
			t.Errorf("Token() = %q, %v; want %q", got, err, tok)
		}
	}
}
