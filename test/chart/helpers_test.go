package chart_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// repoRoot is the repository's top directory.
var repoRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}()

// chartDir is the chart under test.
var chartDir = filepath.Join(repoRoot, "charts", "kalpc")

// Release name and namespace of the tests, as in the docs: with them the
// objects get the names the operator's flags default to.
const (
	releaseName      = "kalpc"
	releaseNamespace = "kalpc-system"
)

// testKubeVersion is the Kubernetes version the rendering tests claim; the
// envtest API server of the installation tests is the same.
const testKubeVersion = "v1.37.2"

// loadChart loads the chart from its directory, as `helm install
// ./charts/kalpc` does.
func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("failed to load the chart: %v", err)
	}
	return c
}

// values parses YAML values, as `-f values.yaml` does.
func values(t testing.TB, doc string) map[string]any {
	t.Helper()
	v := map[string]any{}
	if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatalf("bad test values: %v", err)
	}
	return v
}

// rendered is the output of one render: the objects and the notes.
type rendered struct {
	objects []*unstructured.Unstructured
	notes   string
}

// renderErr renders the chart client-side, as `helm template` does, into
// namespace with release name name.
func renderErr(name, namespace string, vals map[string]any) (*rendered, error) {
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.DryRun = true
	install.ClientOnly = true
	install.Replace = true
	install.ReleaseName = name
	install.Namespace = namespace
	// Helm's default is the client-go version it was built with, which a
	// test binary does not know.
	kubeVersion, err := chartutil.ParseKubeVersion(testKubeVersion)
	if err != nil {
		return nil, err
	}
	install.KubeVersion = kubeVersion
	c, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	rel, err := install.Run(c, vals)
	if err != nil {
		return nil, err
	}
	objs, err := parseManifest(rel.Manifest)
	if err != nil {
		return nil, err
	}
	return &rendered{objects: objs, notes: rel.Info.Notes}, nil
}

// render renders the chart with the tests' release name and namespace.
func render(t testing.TB, vals map[string]any) *rendered {
	t.Helper()
	r, err := renderErr(releaseName, releaseNamespace, vals)
	if err != nil {
		t.Fatalf("failed to render the chart: %v", err)
	}
	return r
}

// parseManifest splits a release manifest into objects, in Helm's order.
func parseManifest(manifest string) ([]*unstructured.Unstructured, error) {
	docs := releaseutil.SplitManifests(manifest)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return manifestIndex(a) - manifestIndex(b) })
	var objs []*unstructured.Unstructured
	for _, k := range keys {
		m := map[string]any{}
		if err := yaml.Unmarshal([]byte(docs[k]), &m); err != nil {
			return nil, fmt.Errorf("failed to parse %s: %w\n%s", k, err, docs[k])
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs, nil
}

// manifestIndex returns N of SplitManifests' key "manifest-N".
func manifestIndex(key string) int {
	var n int
	fmt.Sscanf(strings.TrimPrefix(key, "manifest-"), "%d", &n)
	return n
}

// find returns the object of kind and name, or nil.
func (r *rendered) find(kind, name string) *unstructured.Unstructured {
	for _, o := range r.objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// kinds returns "Kind/name" of every object, sorted.
func (r *rendered) kinds() []string {
	var out []string
	for _, o := range r.objects {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	slices.Sort(out)
	return out
}

// get converts the object of kind and name into a typed object.
func get[T any](t testing.TB, r *rendered, kind, name string) *T {
	t.Helper()
	o := r.find(kind, name)
	if o == nil {
		t.Fatalf("no %s %q rendered; have %v", kind, name, r.kinds())
	}
	out := new(T)
	if err := kruntime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, out, true); err != nil {
		t.Fatalf("%s %q does not convert to %T (unknown or mistyped fields): %v", kind, name, out, err)
	}
	return out
}

// readYAMLDocs reads the YAML documents of a generated file under config/
// into typed objects of type T.
func readYAMLDocs[T any](t testing.TB, path string) []*T {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	var out []*T
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		v := new(T)
		if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
			t.Fatalf("failed to parse %s: %v", path, err)
		}
		out = append(out, v)
	}
	return out
}
