package chart_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
)

// TestSchemaRejectsBadValues renders with values that are typos or out of
// range and expects Helm to refuse them with a message that names the key.
func TestSchemaRejectsBadValues(t *testing.T) {
	for _, c := range []struct {
		vals    string
		wantErr string
	}{
		{"crd: {enabled: false}", "crd"},
		{"operator: {replicas: 3}", "replicas"},
		{"operator: {replicaCount: 0}", "replicaCount"},
		{"operator: {image: {digest: latest}}", "digest"},
		{"operator: {logFormat: text}", "logFormat"},
		{"operator: {extraArgs: [leader-elect]}", "extraArgs"},
		{"sidecar: {resources: {limit: {memory: 1Gi}}}", "limit"},
		{"sidecar: {resources: {limits: {memory: lots}}}", "memory"},
		{"sidecar: {resources: {limits: {ephemeral-storage: 1Gi}}}", "ephemeral-storage"},
		{"sidecar: {runAsUser: 0}", "runAsUser"},
		{"sidecar: {logLevel: verbose}", "logLevel"},
		{"sidecar: {healthPort: 70000}", "healthPort"},
		{"sidecar: {image: {pullPolicy: Sometimes}}", "pullPolicy"},
		{"sidecar: {metricsAuth: \"yes\"}", "metricsAuth"},
		{"sidecar: {podMonitor: {tokenSecret: {secret: x}}}", "secret"},
		{"webhook: {failurePolicy: Never}", "failurePolicy"},
		{"webhook: {timeoutSeconds: 31}", "timeoutSeconds"},
		{"webhook: {namespaceSelector: {matchLabel: {a: b}}}", "matchLabel"},
		{"webhook: {objectSelector: {matchExpressions: [{key: a, operator: Equals}]}}", "operator"},
		{"webhook: {excludedNamespaces: [Kube_System]}", "excludedNamespaces"},
		{"webhook: {certificate: {provider: vault}}", "provider"},
		{"webhook: {certificate: {validity: 90d}}", "validity"},
		{"webhook: {certificate: {certManager: {issuerRef: {name: x, kind: Vault}}}}", "kind"},
		{"metrics: {serviceMonitor: {enable: true}}", "enable"},
		{"nodePrep: {mode: \"0777\"}", "mode"},
		{"nodePrep: {mode: \"0600\"}", "mode"},
		{"nodePrep: {interval: soon}", "interval"},
		{"nodePrep: {hostPath: /run/kalpc}", "hostPath"},
	} {
		t.Run(c.vals, func(t *testing.T) {
			_, err := renderErr(releaseName, releaseNamespace, values(t, c.vals))
			if err == nil {
				t.Fatalf("values %q were accepted", c.vals)
			}
			if !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("error does not name %q: %v", c.wantErr, err)
			}
		})
	}
}

// TestTemplateChecks covers what the schema cannot express; the templates
// fail with a message instead.
func TestTemplateChecks(t *testing.T) {
	for _, c := range []struct {
		vals    string
		wantErr string
	}{
		{"operator: {replicaCount: 2, leaderElection: {enabled: false}}", "requires operator.leaderElection.enabled"},
		{"operator: {serviceAccount: {create: false}}", "operator.serviceAccount.name is required"},
		{"metrics: {port: 9443}", "metrics.port must differ"},
		{"webhook: {port: 8081}", "webhook.port and operator.healthPort must differ"},
		{"sidecar: {healthPort: 15981}", "sidecar.healthPort and sidecar.metricsPort must differ"},
		{"sidecar: {metricsAuth: true, podMonitor: {enabled: true}}", "needs sidecar.podMonitor.tokenSecret.name"},
	} {
		t.Run(c.vals, func(t *testing.T) {
			_, err := renderErr(releaseName, releaseNamespace, values(t, c.vals))
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, c.wantErr)
			}
		})
	}
	if _, err := renderErr(releaseName, releaseNamespace, values(t, "operator: {replicaCount: 1, leaderElection: {enabled: false}}")); err != nil {
		t.Errorf("one replica without leader election: %v", err)
	}
}

// TestValuesDocumented checks that values.yaml matches the schema and that
// every value in it has a "# --" comment.
func TestValuesDocumented(t *testing.T) {
	c := loadChart(t)
	if err := chartutil.ValidateAgainstSchema(c, c.Values); err != nil {
		t.Fatalf("values.yaml does not match values.schema.json: %v", err)
	}
	for _, f := range c.Raw {
		if f.Name == "values.yaml" {
			for _, key := range undocumentedKeys(string(f.Data)) {
				t.Errorf("values.yaml: %s has no \"# --\" comment", key)
			}
		}
	}
	// The checker itself.
	sample := "a:\n  # -- Documented.\n  b: 1\n  c: 2\n# -- A documented block.\nd:\n  e: 3\nf:\n  - x\n"
	if diff := cmp.Diff([]string{"line 4: c: 2", "line 8: f:"}, undocumentedKeys(sample)); diff != "" {
		t.Errorf("undocumentedKeys (-want +got):\n%s", diff)
	}
}

// undocumentedKeys returns the keys of a values file that need a "# --"
// comment and have none. A key whose value is a block of keys needs none
// (its keys do), unless its own comment documents the whole block.
func undocumentedKeys(text string) []string {
	lines := strings.Split(text, "\n")
	isKey := func(i int) bool {
		tr := strings.TrimSpace(lines[i])
		return tr != "" && !strings.HasPrefix(tr, "#") && !strings.HasPrefix(tr, "-") && strings.Contains(tr, ":")
	}
	documented := func(i int) bool {
		for j := i - 1; j >= 0 && strings.HasPrefix(strings.TrimSpace(lines[j]), "#"); j-- {
			if strings.HasPrefix(strings.TrimSpace(lines[j]), "# --") {
				return true
			}
		}
		return false
	}
	// blockOfKeys reports whether key line i has a block of keys as value.
	blockOfKeys := func(i int) bool {
		_, rest, _ := strings.Cut(lines[i], ":")
		if strings.TrimSpace(rest) != "" {
			return false
		}
		for j := i + 1; j < len(lines); j++ {
			tr := strings.TrimSpace(lines[j])
			if tr == "" || strings.HasPrefix(tr, "#") {
				continue
			}
			return indent(lines[j]) > indent(lines[i]) && !strings.HasPrefix(tr, "-")
		}
		return false
	}
	var out []string
	var docIndent []int // indents of the enclosing documented blocks
	for i := range lines {
		if !isKey(i) {
			continue
		}
		for len(docIndent) > 0 && indent(lines[i]) <= docIndent[len(docIndent)-1] {
			docIndent = docIndent[:len(docIndent)-1]
		}
		if len(docIndent) > 0 {
			continue // part of a documented default
		}
		switch {
		case documented(i):
			if blockOfKeys(i) {
				docIndent = append(docIndent, indent(lines[i]))
			}
		case blockOfKeys(i):
		default:
			out = append(out, fmt.Sprintf("line %d: %s", i+1, strings.TrimSpace(lines[i])))
		}
	}
	return out
}

func indent(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }

// TestLint runs `helm lint --strict` through the SDK with the default values
// and with the cert-manager option.
func TestLint(t *testing.T) {
	for _, vals := range []string{"", "webhook: {certificate: {provider: cert-manager}}\nmetrics: {serviceMonitor: {enabled: true}}"} {
		lint := action.NewLint()
		lint.Strict = true
		lint.Namespace = releaseNamespace
		lint.KubeVersion, _ = chartutil.ParseKubeVersion(testKubeVersion)
		res := lint.Run([]string{chartDir}, values(t, vals))
		for _, msg := range res.Messages {
			if msg.Severity > support.InfoSev {
				t.Errorf("helm lint (%q): %s", vals, msg)
			}
		}
		for _, err := range res.Errors {
			t.Errorf("helm lint (%q): %v", vals, err)
		}
	}
}
