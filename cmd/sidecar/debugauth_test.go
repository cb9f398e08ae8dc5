package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/plugin"
	"github.com/kalpc/kalpc/internal/sidecar/connections"
	"github.com/kalpc/kalpc/internal/sidecar/httpauth"
)

// serviceAccountToken creates ServiceAccount ns/name bound to rules (a Role
// in ns, or a ClusterRole when clusterWide) and returns an API token of it.
func serviceAccountToken(t *testing.T, ns, name string, clusterWide bool, rules ...rbacv1.PolicyRule) string {
	t.Helper()
	ctx := t.Context()
	objs := []client.Object{&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: name}}
	if clusterWide {
		roleName := "test-" + ns + "-" + name
		objs = append(objs,
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: roleName}, Rules: rules},
			&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: roleName}, Subjects: subject,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: roleName}})
	} else if len(rules) > 0 {
		objs = append(objs,
			&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: rules},
			&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Subjects: subject,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}})
	}
	for _, o := range objs {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatalf("failed to create %T %s: %v", o, o.GetName(), err)
		}
		if o.GetNamespace() == "" {
			t.Cleanup(func() { _ = k8s.Delete(context.Background(), o) })
		}
	}
	exp := int64(3600)
	tr, err := clientset.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// TestDebugEndpointAuth: /debug/connections is served only to a token the
// API server authenticates and allows get on pods/proxy of the sidecar's
// pod; /metrics too with --metrics-auth (get on the /metrics URL).
func TestDebugEndpointAuth(t *testing.T) {
	c := newCluster(t)
	c.port("echo", echoPortSpec("client"))
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	c.sidecarArgs = []string{"--metrics-auth"}
	secured := c.newPod("secured", "server", map[string]string{"app": "echo"})
	client := c.newPod("client", "client", nil)
	server.must("publish echo")
	client.must("connect %s/echo hello", c.ns)

	// A namespace tenant allowed pods/proxy of the pod "server" only, and a
	// scraper allowed the /metrics URL only.
	tenant := serviceAccountToken(t, c.ns, "tenant", false, rbacv1.PolicyRule{
		APIGroups: []string{""}, Resources: []string{"pods/proxy"}, Verbs: []string{"get"}, ResourceNames: []string{"server"}})
	scraper := serviceAccountToken(t, c.ns, "scraper", true, rbacv1.PolicyRule{
		NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}})

	for _, tc := range []struct {
		name   string
		pod    *pod
		path   string
		header string // where the token goes; "" is Authorization
		token  string
		want   int
	}{
		{"no token", server, connections.Path, "", "", http.StatusUnauthorized},
		{"forged token", server, connections.Path, "", "not-a-token", http.StatusUnauthorized},
		{"token allowed nothing", server, connections.Path, "", nobodyToken, http.StatusForbidden},
		{"token allowed pods/proxy", server, connections.Path, "", readerToken, http.StatusOK},
		{"token in " + httpauth.TokenHeader + " (pods/proxy drops Authorization)", server, connections.Path, httpauth.TokenHeader, readerToken, http.StatusOK},
		{"tenant allowed this pod's pods/proxy", server, connections.Path, "", tenant, http.StatusOK},
		{"tenant not allowed that pod's pods/proxy", secured, connections.Path, "", tenant, http.StatusForbidden},
		{"scraper token for the debug list", server, connections.Path, "", scraper, http.StatusForbidden},
		{"metrics without --metrics-auth, no token", server, "/metrics", "", "", http.StatusOK},
		{"metrics with --metrics-auth, no token", secured, "/metrics", "", "", http.StatusUnauthorized},
		{"metrics with --metrics-auth, pods/proxy token", secured, "/metrics", "", readerToken, http.StatusForbidden},
		{"metrics with --metrics-auth, scraper token", secured, "/metrics", "", scraper, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://sidecar"+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" {
				h := cmpOr(tc.header, "Authorization")
				req.Header.Set(h, "Bearer "+tc.token)
			}
			resp, err := tc.pod.httpClientWith("").Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want {
				t.Fatalf("GET %s of %s: %s %q, want %d", tc.path, tc.pod.name, resp.Status, body, tc.want)
			}
			switch {
			case tc.want == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "":
				t.Errorf("401 without WWW-Authenticate")
			case tc.want == http.StatusOK && tc.path == connections.Path:
				var l connections.List
				if err := json.Unmarshal(body, &l); err != nil || len(l.Connections) != 1 || l.Connections[0].Client.Name != "client" {
					t.Errorf("the authorized read: %v, %s", err, body)
				}
			case tc.want != http.StatusOK && bytes.Contains(body, []byte(client.uid)):
				t.Errorf("a refused request got the list: %s", body)
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// hostIP returns an IPv4 address of this host the API server may proxy to
// (not loopback or link-local, which pods/proxy refuses), or "".
func hostIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

// TestKubectlConnectionsThroughPodsProxy runs `kubectl kalpc connections`
// with its real fetcher: the API server's pods/proxy subresource reaches
// the server sidecar at its pod IP (a listener on this host forwarding to
// the pod's metrics port), so the request crosses the real API server as in
// a cluster, which removes Authorization before proxying.
func TestKubectlConnectionsThroughPodsProxy(t *testing.T) {
	ip := hostIP()
	if ip == "" {
		t.Skip("no global unicast IPv4 address on this host for the API server to proxy to")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	c := newCluster(t)
	c.port("echo", echoPortSpec("client"))
	c.editPod = func(po *corev1.Pod) {
		po.Spec.Containers = append(po.Spec.Containers, corev1.Container{Name: kalpcv1alpha1.SidecarContainerName, Image: "example/sidecar",
			Ports: []corev1.ContainerPort{{Name: kalpcv1alpha1.SidecarMetricsPortName, ContainerPort: int32(port)}}})
	}
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	c.editPod = nil
	client := c.newPod("client", "client", nil)
	server.must("publish echo")
	client.must("connect %s/echo hello", c.ns)
	setEndpoints(t, c.ns, "echo", server)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				u, err := net.Dial("unix", filepath.Join(server.dir, "metrics.sock"))
				if err != nil {
					return
				}
				defer u.Close()
				splice(conn, u)
			}()
		}
	}()
	var po corev1.Pod
	if err := k8s.Get(t.Context(), client2key(c.ns, "server"), &po); err != nil {
		t.Fatal(err)
	}
	po.Status.PodIP, po.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	if err := k8s.Status().Update(t.Context(), &po); err != nil {
		t.Fatal(err)
	}

	// The plugin's user: what docs/kubectl-plugin.md lists for connections,
	// in this namespace.
	userRules := []rbacv1.PolicyRule{
		{APIGroups: []string{kalpcv1alpha1.GroupVersion.Group}, Resources: []string{"connectionports"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"pods", "pods/proxy"}, Verbs: []string{"get"}},
	}
	userToken := serviceAccountToken(t, c.ns, "plugin-user", false, userRules...)
	viewer := serviceAccountToken(t, c.ns, "viewer", false, userRules[0], rbacv1.PolicyRule{
		APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}})
	dir := t.TempDir()
	tokenKubeconfig := func(name, token string) string {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
		cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
		cfg.Contexts[name] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: name, Namespace: c.ns}
		cfg.CurrentContext = name
		path := filepath.Join(dir, name+".kubeconfig")
		if err := clientcmd.WriteToFile(*cfg, path); err != nil {
			t.Fatal(err)
		}
		return path
	}
	certKubeconfig := filepath.Join(dir, "cert.kubeconfig")
	if err := os.WriteFile(certKubeconfig, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(userToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(kc string, args ...string) (plugin.ConnectionReport, string, error) {
		var out, errOut bytes.Buffer
		cmd := plugin.NewCommand(plugin.Options{IOStreams: genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}})
		cmd.SetArgs(append([]string{"connections", "echo", "-n", c.ns, "-o", "json", "--kubeconfig", kc}, args...))
		err := cmd.ExecuteContext(t.Context())
		var r plugin.ConnectionReport
		if err == nil {
			if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
				err = fmt.Errorf("bad JSON %q: %w", out.String(), jerr)
			}
		}
		return r, errOut.String(), err
	}
	listsClient := func(r plugin.ConnectionReport) bool {
		return len(r.Items) == 1 && r.Items[0].Client.UID == client.uid && len(r.Errors) == 0
	}

	// The kubeconfig's own bearer token is forwarded.
	if r, errOut, err := run(tokenKubeconfig("plugin-user", userToken)); err != nil || !listsClient(r) {
		t.Errorf("with a token kubeconfig: %v, %+v, stderr %q", err, r, errOut)
	}
	// A client certificate cannot be forwarded: a clear error ...
	_, errOut, err := run(certKubeconfig)
	if !errors.Is(err, plugin.ErrNoSidecarRead) || !strings.Contains(errOut, "--sidecar-token-file") {
		t.Errorf("with a client certificate kubeconfig: %v, stderr %q; want the sidecar's refusal naming --sidecar-token-file", err, errOut)
	}
	// ... and --sidecar-token-file supplies the token.
	if r, errOut, err := run(certKubeconfig, "--sidecar-token-file", tokenFile); err != nil || !listsClient(r) {
		t.Errorf("with --sidecar-token-file: %v, %+v, stderr %q", err, r, errOut)
	}
	// A user without pods/proxy is refused (by the API server already).
	if _, errOut, err := run(tokenKubeconfig("viewer", viewer)); !errors.Is(err, plugin.ErrNoSidecarRead) || !strings.Contains(errOut, "pods/proxy") {
		t.Errorf("a user without pods/proxy: %v, stderr %q", err, errOut)
	}
}

func client2key(ns, name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }
