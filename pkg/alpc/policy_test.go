//go:build linux && !kalpc_stub

package alpc

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPolicyApply(t *testing.T) {
	base, err := (&Config{AllowDirectAccess: true}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		policy Policy
		want   func(c *Config)
	}{
		{"zero policy leaves the config but disables sections", Policy{DirectAccess: true}, func(c *Config) { c.DisableSections = true }},
		{"maxSectionBytes 0 disables sections", Policy{InlineLimit: 4096, MaxSectionBytes: 0, DirectAccess: true}, func(c *Config) {
			c.InlineLimit, c.DisableSections = 4096, true
		}},
		{"smaller limits win", Policy{InlineLimit: 4096, MaxMessageSize: 1 << 20, MaxPendingCalls: 8, MaxSectionBytes: 8 << 20, DirectAccess: true}, func(c *Config) {
			c.InlineLimit, c.MaxMessageSize, c.MaxPendingCalls, c.MaxSectionBytes = 4096, 1<<20, 8, 8<<20
			c.policyLimited = policyMaxMessageSize | policyMaxPendingCalls | policyMaxSectionBytes
		}},
		{"larger limits do not raise the config", Policy{InlineLimit: MaxInlineLimit, MaxMessageSize: 1 << 40, MaxSectionBytes: 1 << 40, DirectAccess: true}, func(c *Config) {}},
		{"port forbids direct access", Policy{MaxSectionBytes: 1 << 20}, func(c *Config) {
			c.AllowDirectAccess, c.MaxSectionBytes, c.policyLimited = false, 1<<20, policyMaxSectionBytes
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := base
			tt.want(&want)
			got := tt.policy.apply(base)
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(Config{}), cmp.Comparer(func(a, b Handler) bool { return a == nil && b == nil })); diff != "" {
				t.Errorf("apply (-want +got):\n%s", diff)
			}
		})
	}
}
