package v1alpha1

// Labels and annotations kalpc reads and writes on core objects. They are part
// of the API: users set the opt-in labels, and the sidecar and the operator
// agree on the others.
const (
	// LabelInject on a Pod opts it in ("true") or out ("false") of sidecar
	// injection. An opt-out wins over a namespace-wide opt-in.
	LabelInject = "kalpc.io/inject"

	// LabelInjection on a Namespace opts every pod in it in ("enabled"),
	// except pods labelled LabelInject "false".
	LabelInjection = "kalpc.io/injection"

	// LabelSidecar is set by the operator's webhook on every pod it injected
	// the sidecar into, with the value LabelSidecarInjected. The operator
	// watches only pods that carry it.
	LabelSidecar = "kalpc.io/sidecar"

	// LabelSidecarInjected is the value of LabelSidecar on injected pods.
	LabelSidecarInjected = "injected"

	// LabelManagedBy marks objects the operator created and owns (for
	// example the sidecars' ClusterRoleBindings); the value is "kalpc-operator".
	LabelManagedBy = "app.kubernetes.io/managed-by"

	// LabelRBACNamespace on a ClusterRoleBinding created by the operator names
	// the namespace whose sidecars it grants access to.
	LabelRBACNamespace = "kalpc.io/sidecar-namespace"

	// AnnotationReadyWhenPublished on a Pod, set to "false" before the pod
	// is created, opts it out of publication-gated readiness: by default
	// the webhook gives the sidecar a readiness probe on /readyz/published,
	// so that a pod selected as a server by a ConnectionPort is Ready (and
	// counts in the port's readyServers) only while its application
	// publishes every such port; with "false" the probe is /readyz, ready
	// once the sidecar serves, as before. Any other value, or none, means
	// the default.
	AnnotationReadyWhenPublished = "kalpc.io/ready-when-published"

	// ValueTrue and ValueFalse are the values of LabelInject (and of
	// AnnotationReadyWhenPublished).
	ValueTrue  = "true"
	ValueFalse = "false"

	// ValueEnabled is the value of LabelInjection that opts a namespace in.
	ValueEnabled = "enabled"
)
