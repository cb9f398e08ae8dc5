package cert

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/kalpc/kalpc/internal/operator/ownerref"
)

// Keys of the certificate Secret.
const (
	KeyCACert         = "ca.crt"
	KeyCAKey          = "ca.key"
	KeyPreviousCACert = "ca-previous.crt"
	KeyCert           = corev1.TLSCertKey
	KeyKey            = corev1.TLSPrivateKeyKey
)

// Default values of Options.
const (
	DefaultCAValidity    = 5 * 365 * 24 * time.Hour
	DefaultCertValidity  = 90 * 24 * time.Hour
	DefaultCheckInterval = 5 * time.Minute
)

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create;update,namespace=kalpc-system
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;update,resourceNames=kalpc-sidecar-injector

// Options configure a Rotator.
type Options struct {
	// Secret is the namespace and name of the Secret holding the CA and the
	// serving certificate. Required.
	Secret client.ObjectKey

	// WebhookConfigurationName is the MutatingWebhookConfiguration whose
	// webhooks get the CA bundle. Required.
	WebhookConfigurationName string

	// Hosts are the DNS names and IP addresses the serving certificate is
	// valid for, normally <service>.<namespace>.svc and its
	// .svc.cluster.local form. Required.
	Hosts []string

	// CAValidity is the lifetime of a new CA. Defaults to 5 years.
	CAValidity time.Duration

	// CertValidity is the lifetime of a new serving certificate, capped by
	// the CA's expiry. Defaults to 90 days.
	CertValidity time.Duration

	// CheckInterval is how often the Rotator re-reads the Secret and renews
	// what is due. Defaults to 5 minutes.
	CheckInterval time.Duration

	// Now returns the current time. Defaults to time.Now; tests move it.
	Now func() time.Time
}

// Rotator keeps the webhook certificate valid and the caBundle current. It is
// a manager.Runnable that runs on every replica.
type Rotator struct {
	client client.Client
	reader client.Reader
	opts   Options

	serving atomic.Pointer[tls.Certificate]
}

var (
	_ manager.Runnable               = &Rotator{}
	_ manager.LeaderElectionRunnable = &Rotator{}
)

// New returns a Rotator for opts. Plug its TLSOption into the webhook server
// before creating the manager, then call SetupWithManager.
func New(opts Options) (*Rotator, error) {
	if opts.Secret.Name == "" || opts.Secret.Namespace == "" {
		return nil, errors.New("certificate secret namespace and name are required")
	}
	if opts.WebhookConfigurationName == "" {
		return nil, errors.New("webhook configuration name is required")
	}
	if len(opts.Hosts) == 0 {
		return nil, errors.New("at least one serving certificate host is required")
	}
	if opts.CAValidity == 0 {
		opts.CAValidity = DefaultCAValidity
	}
	if opts.CertValidity == 0 {
		opts.CertValidity = DefaultCertValidity
	}
	if opts.CheckInterval == 0 {
		opts.CheckInterval = DefaultCheckInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Rotator{opts: opts}, nil
}

// SetupWithManager makes the Rotator write with the manager's client and read
// with its APIReader (not a cache, so that the operator needs no
// cluster-wide watch on Secrets), runs it with the manager and adds its
// readiness check as "webhook-certificate".
func (r *Rotator) SetupWithManager(mgr manager.Manager) error {
	r.client, r.reader = mgr.GetClient(), mgr.GetAPIReader()
	if err := mgr.Add(r); err != nil {
		return fmt.Errorf("failed to add the certificate rotator to the manager: %w", err)
	}
	if err := mgr.AddReadyzCheck("webhook-certificate", r.ReadyCheck); err != nil {
		return fmt.Errorf("failed to add the webhook certificate readiness check: %w", err)
	}
	return nil
}

// TLSOption makes a tls.Config serve the Rotator's certificate. Pass it in
// the webhook server's TLSOpts.
func (r *Rotator) TLSOption(c *tls.Config) {
	c.GetCertificate = r.GetCertificate
}

// NeedLeaderElection returns false: every replica serves webhooks, so every
// replica needs the certificate.
func (r *Rotator) NeedLeaderElection() bool { return false }

// Start syncs at once, then every CheckInterval (sooner after a failure),
// until ctx is done.
func (r *Rotator) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("cert-rotator")
	retry := time.Second
	for {
		wait := r.opts.CheckInterval
		if err := r.Sync(ctx); err != nil {
			log.Error(err, "Failed to sync the webhook certificate", "retryIn", retry)
			wait, retry = retry, min(retry*2, r.opts.CheckInterval)
		} else {
			retry = time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// GetCertificate returns the serving certificate for the webhook server's
// tls.Config.
func (r *Rotator) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := r.serving.Load()
	if c == nil {
		return nil, errors.New("the webhook serving certificate is not loaded yet")
	}
	return c, nil
}

// ReadyCheck is a healthz.Checker that fails until a serving certificate is
// loaded.
func (r *Rotator) ReadyCheck(*http.Request) error {
	if r.serving.Load() == nil {
		return errors.New("webhook serving certificate not loaded")
	}
	return nil
}

// Sync makes one pass: it creates or renews the CA and the serving
// certificate as needed, puts the CA bundle into the webhook configuration,
// and then serves the certificate. The Secret is owned by the webhook
// configuration, so that deleting the configuration (helm uninstall) lets
// Kubernetes' garbage collector delete the Secret.
func (r *Rotator) Sync(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("cert-rotator")
	now := r.opts.Now()

	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := r.reader.Get(ctx, client.ObjectKey{Name: r.opts.WebhookConfigurationName}, cfg); err != nil {
		return fmt.Errorf("failed to get MutatingWebhookConfiguration %q: %w", r.opts.WebhookConfigurationName, err)
	}
	owner := OwnerReference(cfg)

	secret := &corev1.Secret{}
	err := r.reader.Get(ctx, r.opts.Secret, secret)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("failed to get certificate secret %s: %w", r.opts.Secret, err)
	}

	data, changed, err := r.renew(secret.Data, now)
	if err != nil {
		return err
	}
	owners := ownerref.WithOwner(secret.OwnerReferences, owner)
	ownerChanged := !equality.Semantic.DeepEqual(secret.OwnerReferences, owners)
	if changed || ownerChanged {
		secret.Data = data
		secret.Type = corev1.SecretTypeTLS
		secret.OwnerReferences = owners
		if exists {
			err = r.client.Update(ctx, secret)
		} else {
			secret.ObjectMeta = metav1.ObjectMeta{
				Name:            r.opts.Secret.Name,
				Namespace:       r.opts.Secret.Namespace,
				Labels:          map[string]string{"app.kubernetes.io/managed-by": "kalpc-operator"},
				OwnerReferences: owners,
			}
			err = r.client.Create(ctx, secret)
		}
		if err != nil {
			// A conflict means another replica won the race; the next pass
			// reads what it wrote.
			return fmt.Errorf("failed to write certificate secret %s: %w", r.opts.Secret, err)
		}
		if changed {
			log.Info("Wrote webhook certificate", "secret", r.opts.Secret, "notAfter", mustNotAfter(data[KeyCert]))
		} else {
			log.Info("Set the owner of the webhook certificate secret", "secret", r.opts.Secret, "owner", owner.Name)
		}
	}

	bundle := append(bytes.Clone(data[KeyCACert]), data[KeyPreviousCACert]...)
	if err := r.injectCABundle(ctx, cfg, bundle); err != nil {
		return err
	}

	serving, err := tls.X509KeyPair(data[KeyCert], data[KeyKey])
	if err != nil {
		return fmt.Errorf("failed to load serving certificate: %w", err)
	}
	r.serving.Store(&serving)
	if serving.Leaf != nil {
		certificateExpiry.Set(float64(serving.Leaf.NotAfter.Unix()))
	}
	return nil
}

// OwnerReference returns a reference to the webhook configuration as the
// owner of objects the operator creates for it.
func OwnerReference(cfg *admissionregistrationv1.MutatingWebhookConfiguration) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: admissionregistrationv1.SchemeGroupVersion.String(),
		Kind:       "MutatingWebhookConfiguration",
		Name:       cfg.Name,
		UID:        cfg.UID,
	}
}

// renew returns the Secret data with a valid CA and serving certificate,
// and whether it differs from data.
func (r *Rotator) renew(data map[string][]byte, now time.Time) (map[string][]byte, bool, error) {
	out := map[string][]byte{}
	for k, v := range data {
		out[k] = v
	}
	changed := false

	ca, err := parseKeyPair(data[KeyCACert], data[KeyCAKey])
	if err != nil || !ca.cert.IsCA || dueForRenewal(ca.cert, now) {
		next, err := newCA(now, r.opts.CAValidity)
		if err != nil {
			return nil, false, err
		}
		delete(out, KeyPreviousCACert)
		if ca != nil && ca.cert.IsCA && now.Before(ca.cert.NotAfter) {
			out[KeyPreviousCACert] = ca.certPEM
		}
		ca = next
		out[KeyCACert], out[KeyCAKey] = ca.certPEM, ca.keyPEM
		changed = true
	}
	if prev, ok := out[KeyPreviousCACert]; ok {
		if c, err := parseCert(prev); err != nil || !now.Before(c.NotAfter) {
			delete(out, KeyPreviousCACert)
			changed = true
		}
	}

	serving, err := parseKeyPair(data[KeyCert], data[KeyKey])
	if changed || err != nil || !signedBy(serving.cert, ca.cert) || !servesHosts(serving.cert, r.opts.Hosts) || dueForRenewal(serving.cert, now) {
		serving, err = newServingCert(ca, r.opts.Hosts, now, r.opts.CertValidity)
		if err != nil {
			return nil, false, err
		}
		out[KeyCert], out[KeyKey] = serving.certPEM, serving.keyPEM
		changed = true
	}
	return out, changed, nil
}

// injectCABundle sets bundle as the caBundle of every webhook of cfg.
func (r *Rotator) injectCABundle(ctx context.Context, cfg *admissionregistrationv1.MutatingWebhookConfiguration, bundle []byte) error {
	changed := false
	for i := range cfg.Webhooks {
		if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, bundle) {
			cfg.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := r.client.Update(ctx, cfg); err != nil {
		return fmt.Errorf("failed to update the caBundle of MutatingWebhookConfiguration %q: %w", r.opts.WebhookConfigurationName, err)
	}
	logf.FromContext(ctx).WithName("cert-rotator").Info("Updated webhook caBundle", "mutatingWebhookConfiguration", r.opts.WebhookConfigurationName)
	return nil
}

// mustNotAfter returns the expiry of a PEM certificate for logs.
func mustNotAfter(certPEM []byte) time.Time {
	c, err := parseCert(certPEM)
	if err != nil {
		return time.Time{}
	}
	return c.NotAfter
}
