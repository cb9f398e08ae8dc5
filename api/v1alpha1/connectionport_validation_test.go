package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/testenv"
)

// k8s is a client of the package's shared API server, started in TestMain.
var k8s client.Client

func TestMain(m *testing.M) {
	os.Exit(runWithAPIServer(m))
}

func runWithAPIServer(m *testing.M) int {
	env, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.Stop()
	k8s = env.Client
	return m.Run()
}

func port(name string, mutate func(*kalpcv1alpha1.ConnectionPort)) *kalpcv1alpha1.ConnectionPort {
	p := &kalpcv1alpha1.ConnectionPort{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: kalpcv1alpha1.ConnectionPortSpec{
			Servers: kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
		},
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

func TestDefaults(t *testing.T) {
	ctx := t.Context()
	p := port("defaults", nil)
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatalf("Create() = %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })

	want := kalpcv1alpha1.MessagePolicy{
		InlineLimitBytes:             kalpcv1alpha1.DefaultInlineLimitBytes,
		MaxMessageBytes:              kalpcv1alpha1.DefaultMaxMessageBytes,
		MaxSectionBytesPerConnection: ptr.To[int64](kalpcv1alpha1.DefaultMaxSectionBytesPerConnection),
		MaxPendingMessages:           kalpcv1alpha1.DefaultMaxPendingMessages,
		MaxConnections:               kalpcv1alpha1.DefaultMaxConnections,
		DirectAccess:                 ptr.To(false),
	}
	if diff := cmp.Diff(want, p.Spec.MessagePolicy); diff != "" {
		t.Errorf("defaulted messagePolicy mismatch (-want +got):\n%s", diff)
	}
	if p.Spec.Clients != nil {
		t.Errorf("clients = %v, want none (same namespace only)", p.Spec.Clients)
	}
}

func TestSampleIsAccepted(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "samples", "kalpc_v1alpha1_connectionport.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p := &kalpcv1alpha1.ConnectionPort{}
	if err := yaml.UnmarshalStrict(data, p); err != nil {
		t.Fatalf("sample does not decode strictly: %v", err)
	}
	p.Namespace = "default"
	if err := k8s.Create(t.Context(), p); err != nil {
		t.Fatalf("Create(sample) = %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*kalpcv1alpha1.ConnectionPort)
		wantErr string // empty: accepted
	}{
		{name: "minimal"},
		{name: "empty server selector serves from every pod", mutate: func(p *kalpcv1alpha1.ConnectionPort) {
			p.Spec.Servers = kalpcv1alpha1.LabelSelector{}
		}},
		{name: "every kind of client rule", mutate: func(p *kalpcv1alpha1.ConnectionPort) {
			p.Spec.Clients = []kalpcv1alpha1.ClientRule{
				{Namespaces: []string{"a", "b-2"}},
				{NamespaceSelector: &kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"team": "x"}}},
				{ServiceAccounts: []string{"client.sa"}},
				{PodSelector: &kalpcv1alpha1.LabelSelector{}},
				{Namespaces: []string{"c"}, ServiceAccounts: []string{"sa"}, PodSelector: &kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "c"}}},
			}
		}},
		{name: "inline only: no sections, max message within inline limit", mutate: func(p *kalpcv1alpha1.ConnectionPort) {
			p.Spec.MessagePolicy = kalpcv1alpha1.MessagePolicy{InlineLimitBytes: 4096, MaxMessageBytes: 4096, MaxSectionBytesPerConnection: ptr.To[int64](0)}
		}},
		{name: "smallest limits", mutate: func(p *kalpcv1alpha1.ConnectionPort) {
			p.Spec.MessagePolicy = kalpcv1alpha1.MessagePolicy{InlineLimitBytes: 256, MaxMessageBytes: 256, MaxPendingMessages: 1, MaxConnections: 1, DirectAccess: ptr.To(true)}
		}},

		{name: "empty client rule", wantErr: "a client rule must set at least one of namespaces, namespaceSelector, serviceAccounts or podSelector",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) { p.Spec.Clients = []kalpcv1alpha1.ClientRule{{}} }},
		{name: "invalid namespace name", wantErr: "spec.clients[0].namespaces[0]",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) {
				p.Spec.Clients = []kalpcv1alpha1.ClientRule{{Namespaces: []string{"Not_A_Namespace"}}}
			}},
		{name: "invalid service account name", wantErr: "spec.clients[0].serviceAccounts[0]",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) {
				p.Spec.Clients = []kalpcv1alpha1.ClientRule{{ServiceAccounts: []string{"-bad"}}}
			}},
		{name: "duplicate namespaces", wantErr: "Duplicate value",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) {
				p.Spec.Clients = []kalpcv1alpha1.ClientRule{{Namespaces: []string{"a", "a"}}}
			}},
		{name: "inline limit above 63 KiB", wantErr: "spec.messagePolicy.inlineLimitBytes: Invalid value: 65536: spec.messagePolicy.inlineLimitBytes in body should be less than or equal to 64512",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) { p.Spec.MessagePolicy.InlineLimitBytes = 65536 }},
		{name: "inline limit below 256", wantErr: "should be greater than or equal to 256",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) { p.Spec.MessagePolicy.InlineLimitBytes = 100 }},
		{name: "inline limit above max message size", wantErr: "messagePolicy.inlineLimitBytes must not exceed messagePolicy.maxMessageBytes",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) {
				p.Spec.MessagePolicy.InlineLimitBytes = 8192
				p.Spec.MessagePolicy.MaxMessageBytes = 4096
			}},
		{name: "sections smaller than a message", wantErr: "messagePolicy.maxSectionBytesPerConnection must be at least messagePolicy.maxMessageBytes",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) {
				p.Spec.MessagePolicy.MaxMessageBytes = 1 << 30
				p.Spec.MessagePolicy.MaxSectionBytesPerConnection = ptr.To[int64](1 << 20)
			}},
		{name: "sections disabled with messages above the inline limit", wantErr: "messagePolicy.maxSectionBytesPerConnection must be at least messagePolicy.maxMessageBytes",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) {
				p.Spec.MessagePolicy.MaxSectionBytesPerConnection = ptr.To[int64](0)
			}},
		{name: "max message above 16 GiB", wantErr: "should be less than or equal to 17179869184",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) {
				p.Spec.MessagePolicy.MaxMessageBytes = 32 << 30
				p.Spec.MessagePolicy.MaxSectionBytesPerConnection = ptr.To[int64](32 << 30)
			}},
		{name: "negative section bytes", wantErr: "should be greater than or equal to 0",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) {
				p.Spec.MessagePolicy.MaxSectionBytesPerConnection = ptr.To[int64](-1)
			}},
		{name: "zero pending messages after defaulting is impossible, negative is rejected", wantErr: "spec.messagePolicy.maxPendingMessages",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) { p.Spec.MessagePolicy.MaxPendingMessages = -1 }},
		{name: "too many connections", wantErr: "spec.messagePolicy.maxConnections",
			mutate: func(p *kalpcv1alpha1.ConnectionPort) { p.Spec.MessagePolicy.MaxConnections = 1 << 20 }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := port(fmt.Sprintf("validation-%d", i), tt.mutate)
			err := k8s.Create(t.Context(), p)
			if err == nil {
				t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Create() = %v, want accepted", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Create() accepted, want error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Create() = %v\nwant error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestRawSpecs sends specs the Go type cannot express (it omits empty and
// required-but-zero fields) as unstructured objects.
func TestRawSpecs(t *testing.T) {
	servers := map[string]any{"matchLabels": map[string]any{"app": "server"}}
	tests := []struct {
		name      string
		spec      map[string]any
		wantErr   string
		wantExact string // the whole error, when set
	}{
		// The whole answer: no "some validation rules were not checked"
		// line beside it.
		{name: "missing servers", spec: map[string]any{}, wantExact: `ConnectionPort.kalpc.io "raw-0" is invalid: ` +
			`spec.servers: Required value: select the pods that may serve the port ({} lets every pod in the namespace serve it)`},
		{name: "missing servers and an invalid client rule", spec: map[string]any{"clients": []any{map[string]any{}}}, wantExact: `ConnectionPort.kalpc.io "raw-1" is invalid: [` +
			`spec.servers: Required value: select the pods that may serve the port ({} lets every pod in the namespace serve it), ` +
			`spec.clients[0]: Invalid value: a client rule must set at least one of namespaces, namespaceSelector, serviceAccounts or podSelector]`},
		{name: "servers In without values", spec: map[string]any{"servers": map[string]any{"matchExpressions": []any{map[string]any{"key": "app", "operator": "In"}}}},
			wantExact: `ConnectionPort.kalpc.io "raw-2" is invalid: spec.servers.matchExpressions[0].values: Required value: values must not be empty when the operator is In or NotIn`},
		{name: "empty clients list", spec: map[string]any{"servers": servers, "clients": []any{}},
			wantErr: "spec.clients must not be an empty list; omit it to allow only clients in the port's own namespace"},
		{name: "empty namespaces list", spec: map[string]any{"servers": servers, "clients": []any{map[string]any{"namespaces": []any{}}}},
			wantErr: "spec.clients[0].namespaces: Invalid value"},
		{name: "unknown message policy field", spec: map[string]any{"servers": servers, "messagePolicy": map[string]any{"inlineLimit": 1024}},
			wantErr: `unknown field "spec.messagePolicy.inlineLimit"`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "kalpc.io/v1alpha1", "kind": "ConnectionPort",
				"metadata": map[string]any{"name": fmt.Sprintf("raw-%d", i), "namespace": "default"},
				"spec":     tt.spec,
			}}
			err := k8s.Create(t.Context(), u, client.FieldValidation(metav1.FieldValidationStrict))
			if err == nil {
				_ = k8s.Delete(context.Background(), u)
				t.Fatalf("Create() accepted, want error containing %q", tt.wantErr)
			}
			if tt.wantExact != "" {
				if err.Error() != tt.wantExact {
					t.Fatalf("Create() = %v\nwant exactly   %s", err, tt.wantExact)
				}
				return
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Create() = %v\nwant error containing %q", err, tt.wantErr)
			}
		})
	}
}
