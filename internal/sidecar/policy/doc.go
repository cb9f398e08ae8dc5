// Package policy decides, from ConnectionPort objects, which pods may serve
// a port and which clients may connect to it, and turns a port's
// messagePolicy into the policy handed to the applications.
//
// Ports and namespaces are read from an informer cache, so changes to a
// ConnectionPort apply to the next connection without restarts. Pods are
// read with a direct GET (the sidecar's RBAC has no list or watch on pods),
// cached for a couple of seconds.
//
// Client rules are ORed; the fields of one rule are ANDed. The namespaces a
// rule applies to are those listed in namespaces and matching
// namespaceSelector (both, when both are set); when neither is set, the
// port's own namespace. Without rules, only the port's own namespace may
// connect.
package policy
