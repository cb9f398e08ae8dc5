package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestParseFlagsDefaults(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	c, err := parseFlags([]string{"--sidecar-image=kalpc/sidecar:1"})
	if err != nil {
		t.Fatalf("parseFlags() = %v", err)
	}
	if c.namespace != "kalpc-system" || c.leaderElectNS != "kalpc-system" || c.certProvider != "operator" {
		t.Errorf("defaults: namespace %q, lease namespace %q, cert provider %q", c.namespace, c.leaderElectNS, c.certProvider)
	}
	if diff := cmp.Diff([]string{"kalpc-webhook.kalpc-system.svc", "kalpc-webhook.kalpc-system.svc.cluster.local"}, c.webhookHosts()); diff != "" {
		t.Errorf("webhook hosts (-want +got):\n%s", diff)
	}
	sc := c.sidecarConfig()
	want := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
	if !cmp.Equal(want, *sc.Resources) {
		t.Errorf("sidecar resources = %v, want %v", sc.Resources, want)
	}
	if sc.NodeVolume != "csi" || sc.CSIDriver != "csi.kalpc.io" {
		t.Errorf("node volume %q of driver %q, want csi of csi.kalpc.io", sc.NodeVolume, sc.CSIDriver)
	}
	if sc.MetricsAuth {
		t.Error("sidecar metrics auth is on by default")
	}
	c, err = parseFlags([]string{"--sidecar-image=kalpc/sidecar:1", "--sidecar-metrics-auth"})
	if err != nil || !c.sidecarConfig().MetricsAuth {
		t.Errorf("--sidecar-metrics-auth: %v, MetricsAuth %v", err, err == nil && c.sidecarConfig().MetricsAuth)
	}
}

func TestParseFlagsNamespaceFromEnv(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "kalpc")
	c, err := parseFlags([]string{"--sidecar-image=i"})
	if err != nil {
		t.Fatal(err)
	}
	if c.namespace != "kalpc" {
		t.Errorf("namespace = %q, want $POD_NAMESPACE", c.namespace)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{nil, "--sidecar-image is required"},
		{[]string{"--sidecar-image=i", "--webhook-cert-provider=vault"}, `--webhook-cert-provider must be "operator" or "cert-manager"`},
		{[]string{"--sidecar-image=i", "--sidecar-memory-limit=lots"}, `--sidecar-memory-limit: invalid quantity "lots"`},
		{[]string{"--sidecar-image=i", "--sidecar-log-level=chatty"}, "--sidecar-log-level must be"},
		{[]string{"--sidecar-image=i", "--sidecar-node-volume=nfs"}, "--sidecar-node-volume must be"},
		{[]string{"--sidecar-image=i", "--sidecar-image-pull-policy=Sometimes"}, "--sidecar-image-pull-policy must be"},
		{[]string{"--sidecar-image=i", "--sidecar-run-as-user=0"}, "--sidecar-run-as-user must be a non-root UID"},
		{[]string{"--sidecar-image=i", "--sidecar-health-port=70000"}, "--sidecar-health-port must be between 1 and 65535"},
		{[]string{"--sidecar-image=i", "--webhook-cert-validity=1000000h"}, "--webhook-cert-validity and --webhook-ca-validity"},
		{[]string{"--sidecar-image=i", "extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := parseFlags(tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseFlags(%q) = %v, want error containing %q", tt.args, err, tt.wantErr)
			}
		})
	}
}
