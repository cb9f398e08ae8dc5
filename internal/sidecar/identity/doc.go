// Package identity proves and verifies pod identities between sidecars.
//
// A sidecar proves its pod's identity with the projected ServiceAccount
// token mounted only into the sidecar (audience kalpc.io, bound to the
// pod); [TokenFile] re-reads it on every use because the kubelet rotates
// it. The peer sidecar verifies it with a TokenReview ([Verifier]) and
// obtains the pod's namespace, ServiceAccount, name and UID.
//
// # Why TokenReview and not offline verification
//
// Offline verification against the issuer's public keys saves an API call
// per connection, but it only proves that the token was signed and has not
// expired. TokenReview also checks that the pod the token is bound to
// still exists with the same UID, so the token of a deleted pod is refused
// at once instead of living out its lifetime; it follows the cluster's key
// rotation and external signers without fetching JWKS; and it is what
// Kubernetes guarantees across distributions. Verdicts are cached for a
// few seconds ([Verifier.CacheTTL]) to keep bursts of connections cheap.
package identity
