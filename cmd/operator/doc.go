// Command operator runs the kalpc operator: it reconciles ConnectionPort
// status, provisions the sidecars' RBAC, injects the kalpc sidecar into
// opted-in pods through a mutating webhook and manages that webhook's TLS
// certificate.
//
// This package only parses flags and wires the manager; the behaviour lives
// in internal/operator. Every flag is documented in docs/operations.md.
package main
