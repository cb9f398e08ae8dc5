package policy

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/podid"
)

// The rule evaluation is a pure function of the objects it reads, so a
// fake reader is enough here; cmd/sidecar tests it against an API server.
func TestAuthorize(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = kalpcv1alpha1.AddToScheme(scheme)
	objs := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"team": "a"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b", Labels: map[string]string{"team": "b"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a", UID: "u-web", Labels: map[string]string{"role": "web"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "job", Namespace: "team-a", UID: "u-job"}},
	}
	r := fake.NewClientBuilder().WithScheme(scheme).WithRuntimeObjects(objs...).Build()
	e := &Engine{Reader: r, Pods: &CachedPods{Client: r}}
	web := podid.Identity{Namespace: "team-a", ServiceAccount: "web", PodName: "web", PodUID: "u-web"}
	job := podid.Identity{Namespace: "team-a", ServiceAccount: "batch", PodName: "job", PodUID: "u-job"}
	ownNS := podid.Identity{Namespace: "srv", ServiceAccount: "x", PodName: "p", PodUID: "u-p"}
	sel := func(k, v string) *kalpcv1alpha1.LabelSelector {
		return &kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{k: v}}
	}
	tests := []struct {
		name   string
		rules  []kalpcv1alpha1.ClientRule
		client podid.Identity
		allow  bool
	}{
		{"no rules, own namespace", nil, ownNS, true},
		{"no rules, other namespace", nil, web, false},
		{"namespaces", []kalpcv1alpha1.ClientRule{{Namespaces: []string{"team-a"}}}, web, true},
		{"namespace selector", []kalpcv1alpha1.ClientRule{{NamespaceSelector: sel("team", "a")}}, web, true},
		{"namespace selector mismatch", []kalpcv1alpha1.ClientRule{{NamespaceSelector: sel("team", "b")}}, web, false},
		{"namespaces AND selector", []kalpcv1alpha1.ClientRule{{Namespaces: []string{"team-a"}, NamespaceSelector: sel("team", "b")}}, web, false},
		{"service account in own namespace only", []kalpcv1alpha1.ClientRule{{ServiceAccounts: []string{"web"}}}, web, false},
		{"service account in listed namespace", []kalpcv1alpha1.ClientRule{{Namespaces: []string{"team-a"}, ServiceAccounts: []string{"web"}}}, web, true},
		{"pod selector", []kalpcv1alpha1.ClientRule{{Namespaces: []string{"team-a"}, PodSelector: sel("role", "web")}}, web, true},
		{"pod selector mismatch", []kalpcv1alpha1.ClientRule{{Namespaces: []string{"team-a"}, PodSelector: sel("role", "web")}}, job, false},
		{"pod replaced (uid differs)", []kalpcv1alpha1.ClientRule{{Namespaces: []string{"team-a"}, PodSelector: sel("role", "web")}},
			podid.Identity{Namespace: "team-a", PodName: "web", PodUID: "old"}, false},
		{"rules are ORed", []kalpcv1alpha1.ClientRule{{Namespaces: []string{"team-b"}}, {Namespaces: []string{"team-a"}, ServiceAccounts: []string{"batch"}}}, job, true},
		{"pod deleted", []kalpcv1alpha1.ClientRule{{Namespaces: []string{"team-a"}, PodSelector: sel("role", "web")}},
			podid.Identity{Namespace: "team-a", PodName: "gone", PodUID: "u-gone"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := &kalpcv1alpha1.ConnectionPort{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "srv"},
				Spec: kalpcv1alpha1.ConnectionPortSpec{Clients: tt.rules}}
			err := e.Authorize(t.Context(), port, tt.client)
			if tt.allow && err != nil {
				t.Fatalf("denied: %v", err)
			}
			if !tt.allow && !errors.Is(err, ErrDenied) {
				t.Fatalf("Authorize = %v, want ErrDenied", err)
			}
		})
	}
}

func TestMayServe(t *testing.T) {
	port := &kalpcv1alpha1.ConnectionPort{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "srv"},
		Spec: kalpcv1alpha1.ConnectionPortSpec{Servers: kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "echo"}}}}
	now := metav1.Now()
	for _, tt := range []struct {
		name string
		pod  corev1.Pod
		ok   bool
	}{
		{"selected", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "srv", Labels: map[string]string{"app": "echo"}}}, true},
		{"not selected", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "srv"}}, false},
		{"other namespace", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Labels: map[string]string{"app": "echo"}}}, false},
		{"terminating", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "srv", Labels: map[string]string{"app": "echo"}, DeletionTimestamp: &now}}, false},
	} {
		err := MayServe(port, &tt.pod)
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrNotServer)) {
			t.Errorf("%s: MayServe = %v", tt.name, err)
		}
	}
}

// TestAuthorizeAPIDown checks that a rule the API server is needed for, and
// cannot be read, refuses the client as unavailable (retry later), never
// allows it, and never calls it denied; rules that need no API read still
// decide.
func TestAuthorizeAPIDown(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	down := apierrors.NewServiceUnavailable("the API server is away")
	r := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return down
		},
	}).Build()
	e := &Engine{Reader: r, Pods: &CachedPods{Client: r}}
	web := podid.Identity{Namespace: "team-a", ServiceAccount: "web", PodName: "web", PodUID: "u-web"}
	for _, c := range []struct {
		name  string
		rules []kalpcv1alpha1.ClientRule
		want  error
	}{
		{"pod selector", []kalpcv1alpha1.ClientRule{{Namespaces: []string{"team-a"}, PodSelector: &kalpcv1alpha1.LabelSelector{}}}, ErrUnavailable},
		{"namespace selector", []kalpcv1alpha1.ClientRule{{NamespaceSelector: &kalpcv1alpha1.LabelSelector{}}}, ErrUnavailable},
		{"another rule allows", []kalpcv1alpha1.ClientRule{{NamespaceSelector: &kalpcv1alpha1.LabelSelector{}}, {Namespaces: []string{"team-a"}}}, nil},
		{"no rule could allow", []kalpcv1alpha1.ClientRule{{Namespaces: []string{"team-b"}}}, ErrDenied},
	} {
		t.Run(c.name, func(t *testing.T) {
			port := &kalpcv1alpha1.ConnectionPort{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "srv"},
				Spec: kalpcv1alpha1.ConnectionPortSpec{Clients: c.rules}}
			err := e.Authorize(t.Context(), port, web)
			if c.want == nil {
				if err != nil {
					t.Fatalf("Authorize = %v, want allowed", err)
				}
				return
			}
			if !errors.Is(err, c.want) || (c.want == ErrUnavailable && errors.Is(err, ErrDenied)) {
				t.Fatalf("Authorize = %v, want %v", err, c.want)
			}
		})
	}
	if _, err := e.Pod(t.Context(), web); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Pod = %v, want ErrUnavailable", err)
	}
	if _, err := e.Port(t.Context(), "srv", "p"); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrPortNotFound) {
		t.Errorf("Port = %v, want ErrUnavailable", err)
	}
}
