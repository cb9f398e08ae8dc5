package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/testenv"
)

const nodeName = "node-a"

var (
	env        *envtest.Environment
	k8s        client.Client
	clientset  *kubernetes.Clientset
	kubeconfig []byte
	sidecarBin string
	apiSocket  string
	apiPort    string
	// readerToken is an API token of a ServiceAccount allowed get on
	// pods/proxy in every namespace: it may read /debug/connections.
	readerToken string
	// nobodyToken is an API token of a ServiceAccount allowed nothing.
	nobodyToken string
)

func TestMain(m *testing.M) {
	if os.Getenv(envRole) == "pod" {
		if err := runPod(); err != nil {
			fmt.Fprintln(os.Stderr, "pod:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(setup(m))
}

func setup(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "skipping the sidecar process tests: they need root for network namespaces")
		return 0
	}
	tmp, err := os.MkdirTemp("", "kalpc-sidecar-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	// The real binary, as the operator runs it.
	sidecarBin = filepath.Join(tmp, "kalpc-sidecar")
	build := exec.Command("go", "build", "-o", sidecarBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "failed to build the sidecar:", err)
		return 1
	}
	te, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer te.Stop()
	env, k8s = te.Environment, te.Client
	cfg := te.Config
	if clientset, err = kubernetes.NewForConfig(cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	user, err := env.AddUser(envtest.User{Name: "kalpc-sidecar-test", Groups: []string{"system:masters"}}, nil)
	if err == nil {
		kubeconfig, err = user.KubeConfig()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "failed to create the sidecars' kubeconfig:", err)
		return 1
	}
	u, err := url.Parse(cfg.Host)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	apiPort = u.Port()
	apiSocket = filepath.Join(tmp, "api.sock")
	ln, err := net.Listen("unix", apiSocket)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ln.Close()
	go serveAPIProxy(ln, u.Host)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}
	if err := k8s.Create(context.Background(), node); err != nil {
		fmt.Fprintln(os.Stderr, "failed to create the node:", err)
		return 1
	}
	if readerToken, nobodyToken, err = httpCallerTokens(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "failed to create the HTTP callers' tokens:", err)
		return 1
	}
	return m.Run()
}

// httpCallerTokens creates the ServiceAccounts "inspector" (bound to a
// ClusterRole allowing get on pods/proxy) and "nobody" in default and
// returns an hour-long API token of each.
func httpCallerTokens(ctx context.Context) (reader, nobody string, err error) {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "test-pod-proxy-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods/proxy"}, Verbs: []string{"get"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "test-pod-proxy-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "default", Name: "inspector"}}}
	for _, o := range []client.Object{role, binding,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "inspector", Namespace: "default"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody", Namespace: "default"}},
	} {
		if err := k8s.Create(ctx, o); err != nil {
			return "", "", err
		}
	}
	tok := func(sa string) (string, error) {
		exp := int64(3600)
		tr, err := clientset.CoreV1().ServiceAccounts("default").CreateToken(ctx, sa,
			&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
		if err != nil {
			return "", err
		}
		return tr.Status.Token, nil
	}
	if reader, err = tok("inspector"); err != nil {
		return "", "", err
	}
	nobody, err = tok("nobody")
	return reader, nobody, err
}

// apiLink is the pods' only way to the API server; a test can cut it.
var apiLink struct {
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

// setAPIDown cuts the pods off the API server (closing the connections
// they have) or lets them reach it again.
func setAPIDown(down bool) {
	apiLink.mu.Lock()
	defer apiLink.mu.Unlock()
	apiLink.down = down
	if down {
		for c := range apiLink.conns {
			_ = c.Close()
		}
	}
}

// serveAPIProxy forwards the pods' API connections (see proxyAPI) to the
// API server, unless the link is down.
func serveAPIProxy(ln net.Listener, host string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		apiLink.mu.Lock()
		if apiLink.down {
			apiLink.mu.Unlock()
			_ = c.Close()
			continue
		}
		if apiLink.conns == nil {
			apiLink.conns = map[net.Conn]bool{}
		}
		apiLink.conns[c] = true
		apiLink.mu.Unlock()
		go func() {
			defer func() {
				apiLink.mu.Lock()
				delete(apiLink.conns, c)
				apiLink.mu.Unlock()
				_ = c.Close()
			}()
			t, err := net.Dial("tcp", host)
			if err != nil {
				return
			}
			defer t.Close()
			splice(c, t)
		}()
	}
}

// cluster is one test's namespace and node directory.
type cluster struct {
	t       *testing.T
	ns      string
	nodeDir string
	pods    []*pod // started by newPod
	// sidecarArgs are more flags for the sidecars newPod starts.
	sidecarArgs []string
	// sidecarBin, when set, is the sidecar binary newPod starts instead of
	// the one built from this tree (the version-skew test's old release).
	sidecarBin string
	// editPod, when set, changes each Pod object before createPod creates it.
	editPod func(*corev1.Pod)
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "sidecar-"}}
	if err := k8s.Create(t.Context(), ns); err != nil {
		t.Fatalf("failed to create namespace: %v", err)
	}
	t.Cleanup(func() {
		// envtest runs no namespace controller: delete the ports too, so
		// that a later test listing all namespaces sees none of this
		// test's (with -count > 1 as well).
		_ = k8s.DeleteAllOf(context.Background(), &kalpcv1alpha1.ConnectionPort{}, client.InNamespace(ns.Name))
		_ = k8s.Delete(context.Background(), ns)
	})
	// Short path: sockets live under it.
	dir, err := os.MkdirTemp("", "kn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return &cluster{t: t, ns: ns.Name, nodeDir: dir}
}

func (c *cluster) port(name string, spec kalpcv1alpha1.ConnectionPortSpec) *kalpcv1alpha1.ConnectionPort {
	c.t.Helper()
	p := &kalpcv1alpha1.ConnectionPort{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.ns}, Spec: spec}
	if err := k8s.Create(c.t.Context(), p); err != nil {
		c.t.Fatalf("failed to create ConnectionPort %s: %v", name, err)
	}
	return p
}

// pod is a pod process: its own network namespace, the real sidecar binary
// and the test application, sharing only the node directory with others.
type pod struct {
	t     *testing.T
	name  string
	uid   string
	sa    string
	dir   string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// createPod creates the ServiceAccount (if needed) and a Pod object bound
// to the test node.
func (c *cluster) createPod(name, sa string, labels map[string]string) *corev1.Pod {
	t := c.t
	t.Helper()
	ctx := t.Context()
	if err := k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: c.ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("failed to create ServiceAccount: %v", err)
	}
	po := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.ns, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: nodeName, ServiceAccountName: sa,
			AutomountServiceAccountToken: new(bool),
			Containers:                   []corev1.Container{{Name: "app", Image: "example/app"}},
		},
	}
	if c.editPod != nil {
		c.editPod(po)
	}
	if err := k8s.Create(ctx, po); err != nil {
		t.Fatalf("failed to create pod %s: %v", name, err)
	}
	return po
}

// newPod creates the pod's objects, requests its projected kalpc token
// (bound to the pod, as the kubelet does) and starts the pod process.
func (c *cluster) newPod(name, sa string, labels map[string]string) *pod {
	t := c.t
	t.Helper()
	po := c.createPod(name, sa, labels)
	dir, err := os.MkdirTemp("", "kp")
	if err != nil {
		t.Fatal(err)
	}
	p := &pod{t: t, name: name, uid: string(po.UID), sa: sa, dir: dir}
	p.setToken(requestToken(t, c.ns, sa, po, identityAudience))
	if err := os.WriteFile(filepath.Join(dir, "kubeconfig"), kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := sidecarBin
	if c.sidecarBin != "" {
		bin = c.sidecarBin
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		envRole+"=pod", envPodDir+"="+dir, envSidecarBin+"="+bin, envAPISocket+"="+apiSocket,
		envAPIPort+"="+apiPort, envNodeDir+"="+c.nodeDir,
		"KALPC_SOCKET="+filepath.Join(dir, "kalpc.sock"),
		"KALPC_POD_NAME="+name, "KALPC_POD_NAMESPACE="+c.ns, "KALPC_POD_UID="+p.uid,
		"KALPC_NODE_NAME="+nodeName, "KALPC_SERVICE_ACCOUNT="+sa,
		envSidecarArgs+"="+strings.Join(c.sidecarArgs, "\n"))
	// Each pod in its own network namespace: no network path between pods.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to start pod %s: %v", name, err)
	}
	p.cmd = cmd
	c.pods = append(c.pods, p)
	p.out = bufio.NewScanner(stdout)
	p.out.Buffer(make([]byte, 1<<20), 1<<20)
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "sidecar.log")); err == nil {
				t.Logf("sidecar log of %s:\n%s", name, lastLines(string(b), 40))
			}
		}
		_ = os.RemoveAll(dir)
	})
	if r := p.read(); r["ready"] != true {
		t.Fatalf("pod %s did not start: %v", name, r)
	}
	return p
}

const identityAudience = "kalpc.io"

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func requestToken(t *testing.T, ns, sa string, po *corev1.Pod, audience string) string {
	t.Helper()
	exp := int64(600)
	tr, err := clientset.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{
			Audiences:         []string{audience},
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: po.Name, UID: po.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

// setToken replaces the pod's projected token, as the kubelet's rotation
// does (atomically).
func (p *pod) setToken(tok string) {
	p.t.Helper()
	tmp := filepath.Join(p.dir, "token.tmp")
	if err := os.WriteFile(tmp, []byte(tok), 0o600); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(p.dir, "token")); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pod) token() string {
	b, err := os.ReadFile(filepath.Join(p.dir, "token"))
	if err != nil {
		p.t.Fatal(err)
	}
	return string(b)
}

func (p *pod) read() map[string]any {
	p.t.Helper()
	if !p.out.Scan() {
		p.t.Fatalf("pod %s exited: %v", p.name, p.out.Err())
	}
	var r map[string]any
	if err := json.Unmarshal(p.out.Bytes(), &r); err != nil {
		p.t.Fatalf("pod %s: bad output %q: %v", p.name, p.out.Text(), err)
	}
	return r
}

// do runs one command in the pod and returns its result.
func (p *pod) do(format string, args ...any) map[string]any {
	p.t.Helper()
	if _, err := fmt.Fprintf(p.stdin, format+"\n", args...); err != nil {
		p.t.Fatalf("pod %s: %v", p.name, err)
	}
	return p.read()
}

// must runs a command that must succeed.
func (p *pod) must(format string, args ...any) map[string]any {
	p.t.Helper()
	r := p.do(format, args...)
	if r["ok"] != true {
		p.t.Fatalf("pod %s: %q failed: %v", p.name, fmt.Sprintf(format, args...), r)
	}
	return r
}

// fails runs a command that must fail with the given error kind.
func (p *pod) fails(kind, format string, args ...any) map[string]any {
	p.t.Helper()
	r := p.do(format, args...)
	if r["ok"] != false || r["kind"] != kind {
		p.t.Fatalf("pod %s: %q = %v, want a %s error", p.name, fmt.Sprintf(format, args...), r, kind)
	}
	return r
}

func (p *pod) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}

// resign returns tok with its claims changed by edit, signed with key:
// the API server's service-account signing key, or a stranger's. Both
// produce ES256 signatures (envtest's issuer key is ECDSA P-256).
func resign(t *testing.T, tok string, key *ecdsa.PrivateKey, edit func(claims map[string]any)) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWT")
	}
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || !strings.Contains(string(hdr), `"ES256"`) {
		t.Fatalf("token header %s is not ES256 (%v)", hdr, err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	edit(claims)
	raw, _ = json.Marshal(claims)
	signed := parts[0] + "." + base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// issuerKey reads envtest's service-account signing key.
func issuerKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.ControlPlane.GetAPIServer().CertDir, "sa-signer.key"))
	if err != nil {
		t.Fatalf("reading the issuer key: %v", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("issuer key is not PEM")
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("issuer key is %T, not ECDSA", k)
	}
	return ek
}
