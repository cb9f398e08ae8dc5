package cert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/yaml"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/operator/inject"
)

const testNamespace = "kalpc-system"

var (
	cfg    *rest.Config
	k8s    client.Client
	scheme *runtime.Scheme
)

func TestMain(m *testing.M) {
	os.Exit(runWithAPIServer(m))
}

func runWithAPIServer(m *testing.M) int {
	env := &envtest.Environment{}
	var err error
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "failed to start envtest (set KUBEBUILDER_ASSETS=$(hack/envtest-bins.sh)):", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "failed to stop envtest:", err)
		}
	}()
	scheme = runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = admissionregistrationv1.AddToScheme(scheme)
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock               { return &clock{now: time.Now()} }
func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

// installWebhookConfiguration creates the generated MutatingWebhookConfiguration
// under name; with url set, its webhooks call url instead of the Service.
func installWebhookConfiguration(t *testing.T, name, url string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "config", "webhook", "manifests.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(data, mwc); err != nil {
		t.Fatal(err)
	}
	mwc.Name = name
	for i := range mwc.Webhooks {
		if url != "" {
			mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url}
		}
	}
	if err := k8s.Create(t.Context(), mwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), mwc) })
}

// newRotator returns a Rotator using the test API server.
func newRotator(t *testing.T, secret, webhookConfig string, hosts []string, c *clock) *Rotator {
	t.Helper()
	r, err := New(Options{
		Secret:                   client.ObjectKey{Namespace: testNamespace, Name: secret},
		WebhookConfigurationName: webhookConfig,
		Hosts:                    hosts,
		CAValidity:               30 * 24 * time.Hour,
		CertValidity:             3 * 24 * time.Hour,
		Now:                      c.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.client, r.reader = k8s, k8s
	// The test leaves no Secret behind for the next run (-count > 1).
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: secret}})
	})
	return r
}

// state reads the Secret and the caBundles.
func state(t *testing.T, secret, webhookConfig string) (*corev1.Secret, [][]byte) {
	t.Helper()
	s := &corev1.Secret{}
	if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: testNamespace, Name: secret}, s); err != nil {
		t.Fatal(err)
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := k8s.Get(t.Context(), client.ObjectKey{Name: webhookConfig}, mwc); err != nil {
		t.Fatal(err)
	}
	var bundles [][]byte
	for _, w := range mwc.Webhooks {
		bundles = append(bundles, w.ClientConfig.CABundle)
	}
	return s, bundles
}

// verify checks that r serves a certificate for host that bundle trusts at
// now.
func verify(t *testing.T, r *Rotator, bundle []byte, host string, now time.Time) *x509.Certificate {
	t.Helper()
	c, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatalf("GetCertificate() = %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatalf("caBundle holds no certificate")
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, CurrentTime: now}); err != nil {
		t.Fatalf("serving certificate does not verify against the caBundle: %v", err)
	}
	return c.Leaf
}

func TestRotation(t *testing.T) {
	const (
		secretName = "rotation-tls"
		mwcName    = "rotation-webhook"
		host       = "kalpc-webhook.kalpc-system.svc"
	)
	installWebhookConfiguration(t, mwcName, "")
	clk := newClock()
	r := newRotator(t, secretName, mwcName, []string{host, host + ".cluster.local"}, clk)

	if err := r.ReadyCheck(nil); err == nil {
		t.Fatal("ReadyCheck() passed before the first sync")
	}
	if err := r.Sync(t.Context()); err != nil {
		t.Fatalf("Sync() = %v", err)
	}
	if err := r.ReadyCheck(nil); err != nil {
		t.Fatalf("ReadyCheck() = %v after sync", err)
	}
	secret, bundles := state(t, secretName, mwcName)
	if len(bundles) != 2 || string(bundles[0]) != string(secret.Data[KeyCACert]) || string(bundles[1]) != string(secret.Data[KeyCACert]) {
		t.Fatalf("caBundles = %q, want the CA in both webhooks", bundles)
	}
	first := verify(t, r, bundles[0], host+".cluster.local", clk.Now())

	// Nothing is due: nothing is written.
	clk.Add(time.Hour)
	if err := r.Sync(t.Context()); err != nil {
		t.Fatalf("Sync() = %v", err)
	}
	again, _ := state(t, secretName, mwcName)
	if again.ResourceVersion != secret.ResourceVersion {
		t.Errorf("Secret rewritten although nothing was due")
	}

	// Two thirds of the serving certificate's 3 days: renewed, same CA.
	clk.Add(2 * 24 * time.Hour)
	if err := r.Sync(t.Context()); err != nil {
		t.Fatalf("Sync() = %v", err)
	}
	renewed, bundles := state(t, secretName, mwcName)
	if string(renewed.Data[KeyCACert]) != string(secret.Data[KeyCACert]) {
		t.Errorf("CA changed although only the serving certificate was due")
	}
	second := verify(t, r, bundles[0], host, clk.Now())
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Errorf("serving certificate was not renewed")
	}

	// Two thirds of the CA's 30 days: new CA, the old one stays in the
	// bundle, the new serving certificate verifies.
	clk.Add(19 * 24 * time.Hour)
	if err := r.Sync(t.Context()); err != nil {
		t.Fatalf("Sync() = %v", err)
	}
	rotated, bundles := state(t, secretName, mwcName)
	if string(rotated.Data[KeyCACert]) == string(secret.Data[KeyCACert]) {
		t.Fatalf("CA was not renewed")
	}
	if string(rotated.Data[KeyPreviousCACert]) != string(secret.Data[KeyCACert]) {
		t.Errorf("previous CA not kept for the transition")
	}
	if want := string(rotated.Data[KeyCACert]) + string(secret.Data[KeyCACert]); string(bundles[0]) != want {
		t.Errorf("caBundle does not hold the new and the previous CA")
	}
	verify(t, r, bundles[0], host, clk.Now())

	// Once the previous CA expired, it leaves the bundle.
	clk.Add(12 * 24 * time.Hour)
	if err := r.Sync(t.Context()); err != nil {
		t.Fatalf("Sync() = %v", err)
	}
	final, bundles := state(t, secretName, mwcName)
	if _, ok := final.Data[KeyPreviousCACert]; ok || string(bundles[0]) != string(final.Data[KeyCACert]) {
		t.Errorf("expired previous CA still in the secret or the bundle")
	}
}

// TestReplicasConverge runs several replicas' first sync at once: they race
// on creating the Secret, and all end up serving the same certificate.
func TestReplicasConverge(t *testing.T) {
	const secretName, mwcName = "race-tls", "race-webhook"
	installWebhookConfiguration(t, mwcName, "")
	clk := newClock()
	var rotators []*Rotator
	for range 4 {
		rotators = append(rotators, newRotator(t, secretName, mwcName, []string{"kalpc-webhook.kalpc-system.svc"}, clk))
	}
	var wg sync.WaitGroup
	for _, r := range rotators {
		wg.Go(func() {
			// Start's loop: retry after a lost race.
			for i := 0; i < 20; i++ {
				if r.Sync(t.Context()) == nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Errorf("replica never synced")
		})
	}
	wg.Wait()
	secret, _ := state(t, secretName, mwcName)
	for i, r := range rotators {
		c, err := r.GetCertificate(nil)
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		if string(c.Certificate[0]) != string(mustDER(t, secret.Data[KeyCert])) {
			t.Errorf("replica %d serves a certificate that is not the Secret's", i)
		}
	}
}

// TestAPIServerTrustsRotator serves the injection webhook with the Rotator's
// certificate and has the real API server call it: the API server accepts
// the certificate through the caBundle the Rotator injected.
func TestAPIServerTrustsRotator(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	_ = lis.Close()

	const mwcName = "trust-webhook"
	installWebhookConfiguration(t, mwcName, "https://127.0.0.1:"+strconv.Itoa(port)+inject.Path)
	r := newRotator(t, "trust-tls", mwcName, []string{"127.0.0.1"}, newClock())
	if err := r.Sync(t.Context()); err != nil {
		t.Fatalf("Sync() = %v", err)
	}

	fullScheme := runtime.NewScheme()
	_ = corev1.AddToScheme(fullScheme)
	injector, err := inject.New(inject.Config{Image: "example/sidecar", OperatorNamespace: testNamespace}, k8s)
	if err != nil {
		t.Fatal(err)
	}
	srv := webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, TLSOpts: []func(*tls.Config){r.TLSOption}})
	srv.Register(inject.Path, injector.Webhook(fullScheme))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("webhook server: %v", err)
		}
	})

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "trust-"}}
	if err := k8s.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns.Name, Labels: map[string]string{kalpcv1alpha1.LabelInject: "true"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/app"}}},
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err = k8s.Create(t.Context(), pod)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // the server may still be starting
	}
	if err != nil {
		t.Fatalf("Create(pod) = %v", err)
	}
	if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != inject.SidecarName {
		t.Fatalf("pod was not injected through the Rotator-secured webhook: %+v", pod.Spec.InitContainers)
	}
}

func mustDER(t *testing.T, certPEM []byte) []byte {
	t.Helper()
	c, err := parseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c.Raw
}

// TestSecretOwnedByWebhookConfiguration checks that the certificate Secret
// is owned by the webhook configuration, so that the garbage collector
// deletes it with the configuration (envtest has none: test/e2e checks the
// collection), and that a Secret without that owner (made by an older
// operator, or edited) gets it without a new certificate.
func TestSecretOwnedByWebhookConfiguration(t *testing.T) {
	const (
		secretName = "owned-tls"
		mwcName    = "owned-webhook"
	)
	installWebhookConfiguration(t, mwcName, "")
	r := newRotator(t, secretName, mwcName, []string{"kalpc-webhook.kalpc-system.svc"}, newClock())
	if err := r.Sync(t.Context()); err != nil {
		t.Fatalf("Sync() = %v", err)
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := k8s.Get(t.Context(), client.ObjectKey{Name: mwcName}, mwc); err != nil {
		t.Fatal(err)
	}
	want := []metav1.OwnerReference{{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration", Name: mwcName, UID: mwc.UID}}
	secret, _ := state(t, secretName, mwcName)
	if diff := cmp.Diff(want, secret.OwnerReferences); diff != "" {
		t.Fatalf("owner references (-want +got):\n%s", diff)
	}

	secret.OwnerReferences = nil
	if err := k8s.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(t.Context()); err != nil {
		t.Fatalf("Sync() = %v", err)
	}
	again, _ := state(t, secretName, mwcName)
	if diff := cmp.Diff(want, again.OwnerReferences); diff != "" {
		t.Errorf("owner references after they were removed (-want +got):\n%s", diff)
	}
	if string(again.Data[KeyCert]) != string(secret.Data[KeyCert]) {
		t.Errorf("the certificate changed although only the owner was missing")
	}
}
