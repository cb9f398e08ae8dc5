package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/sidecar/connections"
	"github.com/kalpc/kalpc/internal/sidecar/httpauth"
)

// PodRef names a pod.
type PodRef struct {
	Namespace string
	Name      string
}

func (p PodRef) String() string { return p.Namespace + "/" + p.Name }

// Fetcher reads the connection list of the kalpc sidecar of a pod.
type Fetcher interface {
	Connections(ctx context.Context, pod PodRef) (*connections.List, error)
}

// FetcherFunc adapts a function to a Fetcher.
type FetcherFunc func(ctx context.Context, pod PodRef) (*connections.List, error)

// Connections calls f.
func (f FetcherFunc) Connections(ctx context.Context, pod PodRef) (*connections.List, error) {
	return f(ctx, pod)
}

var (
	_ Fetcher = FetcherFunc(nil)
	_ Fetcher = ProxyFetcher{}
)

// maxListBytes bounds a sidecar's answer: 1024 connections of a port take
// well under 1 MiB.
const maxListBytes = 16 << 20

// DecodeList reads a connection list as a sidecar serves it.
func DecodeList(r io.Reader) (*connections.List, error) {
	var l connections.List
	dec := json.NewDecoder(io.LimitReader(r, maxListBytes))
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("failed to decode the sidecar's connection list: %w", err)
	}
	return &l, nil
}

// ProxyFetcher reaches sidecars through the API server's pods/proxy
// subresource: GET /api/v1/namespaces/NS/pods/NAME:PORT/proxy/debug/connections,
// where PORT is the number of the sidecar container's kalpc-metrics port. It
// needs get on pods and on pods/proxy. The sidecar serves the list only to a
// bearer token the API server authenticates and allows get on pods/proxy of
// that pod: build Clientset from a configuration passed through
// WithSidecarToken.
type ProxyFetcher struct {
	// Clientset talks to the API server (required).
	Clientset kubernetes.Interface
}

// ErrNoSidecarToken is returned (wrapped) by ProxyFetcher when a sidecar
// refused a request for want of a bearer token.
var ErrNoSidecarToken = errors.New("the sidecar requires a bearer token that the API server authenticates")

// WithSidecarToken returns a copy of cfg whose requests for a sidecar's
// connection list through pods/proxy carry a bearer token in the
// httpauth.TokenHeader header, since the API server removes Authorization
// before proxying: the token in tokenFile (re-read on every request) when
// it is not "", else the bearer token the request is authenticated with
// (the kubeconfig's token or token file, or an exec or auth-provider
// plugin's). A kubeconfig that authenticates with a client certificate has
// no token to forward: use tokenFile.
func WithSidecarToken(cfg *rest.Config, tokenFile string) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	// WrapTransport runs innermost, after the authentication wrappers have
	// set Authorization.
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return sidecarTokenTransport{rt: rt, file: tokenFile} })
	return cfg
}

type sidecarTokenTransport struct {
	rt   http.RoundTripper
	file string
}

func (t sidecarTokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(r.URL.Path, "/proxy"+connections.Path) || !strings.Contains(r.URL.Path, "/pods/") {
		return t.rt.RoundTrip(r)
	}
	var tok string
	if t.file != "" {
		b, err := os.ReadFile(t.file)
		if err != nil {
			return nil, fmt.Errorf("failed to read --sidecar-token-file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	} else if scheme, v, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		tok = strings.TrimSpace(v)
	}
	if tok == "" {
		return t.rt.RoundTrip(r)
	}
	r = r.Clone(r.Context()) // a RoundTripper must not change its request
	r.Header.Set(httpauth.TokenHeader, "Bearer "+tok)
	return t.rt.RoundTrip(r)
}

// Connections fetches pod's list through pods/proxy.
func (f ProxyFetcher) Connections(ctx context.Context, ref PodRef) (*connections.List, error) {
	pods := f.Clientset.CoreV1().Pods(ref.Namespace)
	pod, err := pods.Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("failed to get pod %s: %w", ref, err)
	}
	port, err := SidecarMetricsPort(pod)
	if err != nil {
		return nil, err
	}
	// The pod proxy does not resolve named ports: it needs the number.
	body, err := pods.ProxyGet("http", ref.Name, strconv.Itoa(int(port)), connections.Path, nil).DoRaw(ctx)
	if err != nil {
		if apierrors.IsUnauthorized(err) {
			return nil, fmt.Errorf("the sidecar of pod %s refused the request: %w (a kubeconfig token or "+
				"exec plugin is forwarded; a client certificate cannot be: pass --sidecar-token-file): %w", ref, ErrNoSidecarToken, err)
		}
		if apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("the sidecar of pod %s (or the API server) refused the request: the token's user may not get pods/proxy of the pod: %w", ref, err)
		}
		if pod.DeletionTimestamp != nil {
			return nil, fmt.Errorf("pod %s is terminating; failed to reach its sidecar through pods/proxy: %w", ref, err)
		}
		return nil, fmt.Errorf("failed to reach the sidecar of pod %s through pods/proxy: %w", ref, err)
	}
	return DecodeList(bytes.NewReader(body))
}

// SidecarMetricsPort returns the number of the kalpc-metrics port of the
// injected sidecar container of pod.
func SidecarMetricsPort(pod *corev1.Pod) (int32, error) {
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name != kalpcv1alpha1.SidecarContainerName {
			continue
		}
		for _, p := range c.Ports {
			if p.Name == kalpcv1alpha1.SidecarMetricsPortName {
				return p.ContainerPort, nil
			}
		}
		return 0, fmt.Errorf("the %s container of pod %s/%s has no %s port (the sidecar's metrics are disabled?)",
			kalpcv1alpha1.SidecarContainerName, pod.Namespace, pod.Name, kalpcv1alpha1.SidecarMetricsPortName)
	}
	return 0, fmt.Errorf("pod %s/%s has no %s container", pod.Namespace, pod.Name, kalpcv1alpha1.SidecarContainerName)
}
