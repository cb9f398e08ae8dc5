// Package cert manages the TLS certificate of the operator's webhook server:
// a self-signed CA, a serving certificate signed by it, rotation before
// either expires, and the caBundle of the MutatingWebhookConfiguration.
//
// # Storage
//
// The CA and the serving certificate live in one Secret in the operator's
// namespace (keys ca.crt, ca.key, tls.crt, tls.key, and ca-previous.crt
// while a replaced CA is still valid). Every operator replica runs a Rotator:
// replicas share the Secret through optimistic concurrency (a create or
// update that loses a race is retried from a fresh read), so no leader is
// needed and every replica serves the same certificate. The Secret is owned
// (metadata.ownerReferences) by the MutatingWebhookConfiguration it serves,
// so Kubernetes' garbage collector deletes it with the configuration (helm
// uninstall), whether or not the operator still runs.
//
// # Rotation
//
// A certificate is renewed once two thirds of its lifetime have passed (as
// cert-manager does by default). A renewed CA is used to issue a new serving
// certificate at once, and the caBundle holds both the new and the previous
// CA until the previous one expires, so that the API server trusts every
// replica while they pick up the new certificate. Before a replica serves a
// certificate it makes sure the caBundle contains its CA.
//
// # Serving
//
// Rotator.GetCertificate is plugged into the webhook server's tls.Config; it
// returns the certificate loaded by the last successful Sync, in memory, so
// rotation takes effect without restarts or mounted files. Rotator.ReadyCheck
// fails until a certificate is loaded.
//
// When cert-manager (or anything else) provides the certificate instead, the
// operator does not run a Rotator: the webhook server reads the mounted files
// and cert-manager's CA injector keeps the caBundle current.
package cert
