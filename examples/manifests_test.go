package examples_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/podid"
	"github.com/kalpc/kalpc/internal/sidecar/policy"
)

// manifest is one example's YAML file, decoded.
type manifest struct {
	path    string
	example string // the directory: examples/<example>/
	objects []runtime.Object
	ports   map[types.NamespacedName]*kalpcv1alpha1.ConnectionPort
	nss     map[string]*corev1.Namespace
	sas     map[types.NamespacedName]bool
	pods    []*corev1.Pod // the pod templates, as the pods they become
}

// TestManifests decodes every manifest under examples/ strictly into typed
// objects and checks what would make the example fail on a cluster: the
// injection opt-in, images that `make example-images` builds, and, for every
// container that publishes or connects to a port (-port), that the
// ConnectionPort exists and lets that pod serve it or connect to it, as the
// sidecar's own policy code decides.
func TestManifests(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, kalpcv1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	decoder := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	examples, registry := makefileImages(t)

	paths, err := filepath.Glob("*/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 5 {
		t.Fatalf("found manifests %v, want one per example", paths)
	}
	seen := map[string]bool{}
	for _, path := range paths {
		seen[filepath.Dir(path)] = true
		t.Run(path, func(t *testing.T) {
			m := decode(t, decoder, path)
			checkNamespaces(t, m)
			checkImages(t, m, examples, registry)
			checkPorts(t, scheme, m)
		})
	}
	for _, e := range examples {
		if !seen[e] {
			t.Errorf("the Makefile builds an image for examples/%s, which has no manifest", e)
		}
	}
}

// makefileImages returns EXAMPLES and IMAGE_REGISTRY from the Makefile.
func makefileImages(t *testing.T) (examples []string, registry string) {
	t.Helper()
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	ex := regexp.MustCompile(`(?m)^EXAMPLES\s*:=\s*(.+)$`).FindSubmatch(mk)
	reg := regexp.MustCompile(`(?m)^IMAGE_REGISTRY\s*\?=\s*(\S+)`).FindSubmatch(mk)
	if ex == nil || reg == nil {
		t.Fatal("the Makefile sets no EXAMPLES or IMAGE_REGISTRY")
	}
	return strings.Fields(string(ex[1])), string(reg[1])
}

func decode(t *testing.T, decoder runtime.Decoder, path string) *manifest {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest{
		path:    path,
		example: filepath.Dir(path),
		ports:   map[types.NamespacedName]*kalpcv1alpha1.ConnectionPort{},
		nss:     map[string]*corev1.Namespace{},
		sas:     map[types.NamespacedName]bool{},
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil { // unknown kinds, unknown or duplicate fields
			t.Fatalf("document %d: %v", i, err)
		}
		m.objects = append(m.objects, obj)
		switch o := obj.(type) {
		case *corev1.Namespace:
			m.nss[o.Name] = o
		case *corev1.ServiceAccount:
			m.sas[key(o)] = true
		case *kalpcv1alpha1.ConnectionPort:
			m.ports[key(o)] = o
		case *appsv1.Deployment:
			sel, err := metav1.LabelSelectorAsSelector(o.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(o.Spec.Template.Labels)) {
				t.Errorf("Deployment %s: selector does not match its pod template (%v)", o.Name, err)
			}
			m.pods = append(m.pods, podOf(o.Namespace, o.Name, &o.Spec.Template))
		case *batchv1.Job:
			m.pods = append(m.pods, podOf(o.Namespace, o.Name, &o.Spec.Template))
		case *corev1.Pod:
			m.pods = append(m.pods, o)
		default:
			t.Errorf("document %d: unexpected kind %v in an example manifest", i, gvk)
		}
	}
	return m
}

func key(o client.Object) types.NamespacedName {
	return types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

// podOf returns the pod a template becomes (with a made-up name and UID).
func podOf(namespace, owner string, tmpl *corev1.PodTemplateSpec) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: *tmpl.ObjectMeta.DeepCopy(), Spec: *tmpl.Spec.DeepCopy()}
	pod.Namespace, pod.Name, pod.UID = namespace, owner+"-pod", types.UID(owner+"-uid")
	return pod
}

// checkNamespaces: every object lives in a Namespace of the file, and
// every pod is opted in to sidecar injection there.
func checkNamespaces(t *testing.T, m *manifest) {
	for _, obj := range m.objects {
		o := obj.(client.Object)
		if _, isNS := obj.(*corev1.Namespace); isNS {
			continue
		}
		if m.nss[o.GetNamespace()] == nil {
			t.Errorf("%T %s is in namespace %q, which the manifest does not create", obj, o.GetName(), o.GetNamespace())
		}
	}
	for _, pod := range m.pods {
		ns := m.nss[pod.Namespace]
		if ns == nil {
			continue
		}
		nsOptIn := ns.Labels[kalpcv1alpha1.LabelInjection] == "enabled"
		podLabel := pod.Labels[kalpcv1alpha1.LabelInject]
		if podLabel == kalpcv1alpha1.ValueFalse || !nsOptIn && podLabel != kalpcv1alpha1.ValueTrue {
			t.Errorf("pod of %s is not opted in to sidecar injection (namespace label %s=enabled or pod label %s=true)",
				pod.Name, kalpcv1alpha1.LabelInjection, kalpcv1alpha1.LabelInject)
		}
		// The sidecar's node directory comes from kalpc's CSI driver (the
		// chart's default), which Pod Security "restricted" admits, so the
		// examples show the strictest level; the application pods must
		// meet it themselves (the upstream evaluator, as the API server
		// runs it; inject's TestPodSecurityOfInjectedPod covers what the
		// webhook adds).
		if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
			t.Errorf("namespace %s enforces Pod Security %q; examples run under restricted", ns.Name, got)
		}
		if r := evaluateRestricted(t, pod); !r.Allowed {
			t.Errorf("pod of %s violates Pod Security restricted:latest: %v", pod.Name, r.ForbiddenReasons)
		}
		// Every namespace has a "default" ServiceAccount; others must be created.
		if sa := pod.Spec.ServiceAccountName; sa != "" && sa != "default" && !m.sas[types.NamespacedName{Namespace: pod.Namespace, Name: sa}] {
			t.Errorf("pod of %s runs as ServiceAccount %q, which the manifest does not create", pod.Name, sa)
		}
	}
}

// evaluateRestricted runs the upstream Pod Security evaluator on pod at
// restricted:latest.
func evaluateRestricted(t *testing.T, pod *corev1.Pod) psapolicy.AggregateCheckResult {
	t.Helper()
	e, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return psapolicy.AggregateCheckResults(e.EvaluatePod(psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}, &pod.ObjectMeta, &pod.Spec))
}

// checkImages: every container runs this example's image, as `make
// example-images IMAGE_TAG=dev` tags it, and never pulls it.
func checkImages(t *testing.T, m *manifest, examples []string, registry string) {
	if !slices.Contains(examples, m.example) {
		t.Errorf("examples/%s is not in the Makefile's EXAMPLES: `make example-images` builds no image for it", m.example)
	}
	want := fmt.Sprintf("%s/kalpc-%s:dev", registry, m.example)
	for _, pod := range m.pods {
		for _, c := range pod.Spec.Containers {
			if c.Image != want {
				t.Errorf("%s/%s: image %q, want %q", pod.Name, c.Name, c.Image, want)
			}
			if c.ImagePullPolicy != corev1.PullNever {
				t.Errorf("%s/%s: imagePullPolicy %q, want Never (the image is loaded, not pulled)", pod.Name, c.Name, c.ImagePullPolicy)
			}
		}
	}
}

// checkPorts: a container running "server ... -port name" must be allowed
// to serve the ConnectionPort name of its namespace; one running
// "client ... -port [namespace/]name" must be allowed to connect to it.
func checkPorts(t *testing.T, scheme *runtime.Scheme, m *manifest) {
	var objs []client.Object
	for _, obj := range m.objects {
		objs = append(objs, obj.(client.Object))
	}
	pods := podGetter{}
	for _, p := range m.pods {
		pods[key(p)] = p
	}
	engine := &policy.Engine{Reader: fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build(), Pods: pods}
	uses := 0
	for _, pod := range m.pods {
		for _, c := range pod.Spec.Containers {
			name, ok := flagValue(c.Args, "port")
			if !ok || len(c.Args) == 0 {
				t.Errorf("%s/%s: no -port argument: it would use the example's default port name", pod.Name, c.Name)
				continue
			}
			uses++
			ns, portName, qualified := strings.Cut(name, "/")
			if !qualified {
				ns, portName = pod.Namespace, name
			}
			port := m.ports[types.NamespacedName{Namespace: ns, Name: portName}]
			if port == nil {
				t.Errorf("%s/%s: -port %s names no ConnectionPort of the manifest", pod.Name, c.Name, name)
				continue
			}
			switch role := c.Args[0]; role {
			case "server":
				if qualified {
					t.Errorf("%s/%s: a server publishes in its own namespace: -port %s should be %s", pod.Name, c.Name, name, portName)
				}
				if err := policy.MayServe(port, pod); err != nil {
					t.Errorf("%s/%s: %v", pod.Name, c.Name, err)
				}
			case "client":
				sa := cmp.Or(pod.Spec.ServiceAccountName, "default")
				id := podid.Identity{Namespace: pod.Namespace, ServiceAccount: sa, PodName: pod.Name, PodUID: string(pod.UID)}
				if err := engine.Authorize(context.Background(), port, id); err != nil {
					t.Errorf("%s/%s: %v", pod.Name, c.Name, err)
				}
			default:
				t.Errorf("%s/%s: args %q: want server or client first", pod.Name, c.Name, c.Args)
			}
		}
	}
	if uses == 0 {
		t.Error("no container uses a ConnectionPort")
	}
	// Direct access is off unless the port allows it.
	if m.example == "region" {
		for _, p := range m.ports {
			if da := p.Spec.MessagePolicy.DirectAccess; da == nil || !*da {
				t.Errorf("ConnectionPort %s: the region example needs messagePolicy.directAccess: true", p.Name)
			}
		}
	}
}

// flagValue returns the value of -name or --name (as "-name v" or
// "-name=v") in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// podGetter serves the manifest's pods to policy.Engine.
type podGetter map[types.NamespacedName]*corev1.Pod

func (g podGetter) Get(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	if p := g[types.NamespacedName{Namespace: namespace, Name: name}]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("no pod %s/%s in the manifest", namespace, name)
}
