// Package inject is the operator's pod mutating webhook: it adds the kalpc
// sidecar to pods that opted in.
//
// # Who is injected
//
// A pod is injected when it is labelled kalpc.io/inject="true", or when its
// namespace is labelled kalpc.io/injection="enabled" and the pod is not
// labelled kalpc.io/inject="false". Pods in kube-system, kube-public,
// kube-node-lease and the operator's own namespace are never injected. The
// MutatingWebhookConfiguration's selectors (see the +kubebuilder:webhook
// markers in webhook.go) make the API server call the webhook only for such
// pods; the handler checks again so that a misconfigured selector cannot
// inject into a pod that did not ask for it.
//
// # What is injected
//
// The webhook adds, in one idempotent step:
//
//   - the sidecar as a native sidecar: the first init container, named
//     kalpc-sidecar, with restartPolicy Always and a startup probe, so that
//     the app containers start only once it serves the pod socket, and a
//     readiness probe on /readyz/published, so that a pod a ConnectionPort
//     selects as a server is Ready only while its application publishes
//     every such port (a pod annotated kalpc.io/ready-when-published="false"
//     gets /readyz instead: Ready once the sidecar serves);
//   - the node directory (the host's /var/run/kalpc), mounted only into the
//     sidecar at /var/run/kalpc/node: an ephemeral inline volume of kalpc's
//     CSI driver csi.kalpc.io by default (Pod Security "restricted" admits
//     it), or a hostPath (Config.NodeVolume);
//   - an emptyDir mounted at /var/run/kalpc/pod into the sidecar and every
//     app container, with KALPC_SOCKET=/var/run/kalpc/pod/kalpc.sock in every
//     app container;
//   - a projected ServiceAccount token with audience kalpc.io, mounted only
//     into the sidecar;
//   - the sidecar's resources and a locked-down security context;
//   - the label kalpc.io/sidecar=injected, which the operator's controllers
//     watch.
//
// Running the mutation on its own output changes nothing. The sidecar's contract
// (its arguments and environment) is described in docs/operations.md.
//
// # Pod Security
//
// The webhook evaluates the injected pod with the upstream Pod Security
// evaluator against the level its namespace enforces and, when injection
// added a violation (a hostPath in a baseline or restricted namespace),
// returns an admission warning naming it: the API server will reject the
// pod, and for a Deployment that would otherwise show only in ReplicaSet
// events.
package inject
