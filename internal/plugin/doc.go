// Package plugin implements kubectl kalpc, the kubectl plugin that shows
// kalpc's connection ports, their server endpoints per node and the live
// connections the sidecars brokered. cmd/kubectl-kalpc only wires it to
// os.Args; see docs/kubectl-plugin.md.
//
// # Commands
//
//   - ports: one line per ConnectionPort (readiness, endpoints, nodes).
//   - describe PORT: the port's rules, message policy, endpoints per node,
//     conditions and recent events.
//   - connections [PORT]: the connections the ports' server sidecars brokered
//     and still list as open (see package connections of the sidecar for
//     exactly what that means).
//   - version: the plugin's version.
//
// # Reaching the sidecars
//
// connections reads each server pod's sidecar list through a [Fetcher]. The
// default, [ProxyFetcher], goes through the API server's pods/proxy
// subresource to the sidecar container's metrics port, so the user needs get
// on pods and pods/proxy in the ports' namespaces and no network path to the
// pods. The sidecar itself checks the same right for the bearer token it is
// given (package httpauth of the sidecar); because the API server removes
// Authorization before proxying, [WithSidecarToken] forwards the token in
// the Kalpc-Authorization header: the kubeconfig's own bearer token, or the
// one in --sidecar-token-file. cmd/sidecar's tests go through a real API
// server's pods/proxy to real sidecars (the pod IP being an address of the
// test host); other tests use other Fetchers.
package plugin
