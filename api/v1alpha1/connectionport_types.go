package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Default values of MessagePolicy, as the CRD schema applies them. They are
// exported so that programs reading a ConnectionPort that predates a field can
// apply the same defaults.
const (
	// DefaultInlineLimitBytes is the default and largest inline limit: 63 KiB,
	// the figure Windows ALPC uses.
	DefaultInlineLimitBytes = 64512
	// MinInlineLimitBytes is the smallest inline limit a port may set.
	MinInlineLimitBytes = 256
	// DefaultMaxMessageBytes is the default largest message: 256 MiB.
	DefaultMaxMessageBytes = 256 << 20
	// DefaultMaxSectionBytesPerConnection is the default section budget of one
	// connection: 256 MiB.
	DefaultMaxSectionBytesPerConnection = 256 << 20
	// DefaultMaxPendingMessages is the default number of requests one side
	// may have outstanding on a connection.
	DefaultMaxPendingMessages = 1024
	// DefaultMaxConnections is the default number of connections one server
	// pod accepts on the port.
	DefaultMaxConnections = 1024
)

// Condition types and reasons of a ConnectionPort.
const (
	// ConditionReady is True when at least one server endpoint is ready.
	ConditionReady = "Ready"

	// ReasonServersReady means at least one selected server pod is ready.
	ReasonServersReady = "ServersReady"
	// ReasonNoReadyServers means no selected server pod is running, ready and
	// carries the kalpc sidecar.
	ReasonNoReadyServers = "NoReadyServers"
	// ReasonInvalidServerSelector means spec.servers cannot be parsed as a
	// label selector; the port is not served until it is fixed. The CRD
	// refuses such a selector, so only a port stored before it did has one.
	ReasonInvalidServerSelector = "InvalidServerSelector"
)

// spec.servers is required by a rule of the spec (reason FieldValueRequired)
// rather than by the schema: a schema "required" error makes the API server
// skip every CEL rule and add "some validation rules were not checked" to
// the answer, which hid the one thing to fix.
//
// Every selector of a port is a LabelSelector, whose rules refuse at
// admission what the operator and the sidecar could not parse.

// ConnectionPortSpec is the desired state of a ConnectionPort: who may serve
// it, who may connect to it and how messages on its connections are bounded.
// +kubebuilder:validation:XValidation:rule="has(self.servers)",message="select the pods that may serve the port ({} lets every pod in the namespace serve it)",fieldPath=".servers",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.clients) || size(self.clients) > 0",message="spec.clients must not be an empty list; omit it to allow only clients in the port's own namespace"
type ConnectionPortSpec struct {
	// servers selects the pods in the port's namespace that may serve it.
	// A pod must also carry the kalpc sidecar to serve. An empty selector
	// ({}) lets every pod in the namespace serve the port.
	// servers is required.
	// +optional
	Servers LabelSelector `json:"servers"`

	// clients lists the rules a connecting pod must satisfy; a client is
	// allowed when it matches at least one rule. When clients is omitted, only
	// pods in the port's own namespace may connect.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Clients []ClientRule `json:"clients,omitempty"`

	// messagePolicy bounds the messages, memory and connections of the port.
	// Every field has a default, so it may be omitted.
	// +optional
	// +kubebuilder:default={inlineLimitBytes: 64512, maxMessageBytes: 268435456, maxSectionBytesPerConnection: 268435456, maxPendingMessages: 1024, maxConnections: 1024, directAccess: false}
	MessagePolicy MessagePolicy `json:"messagePolicy,omitzero"`
}

// ClientRule matches connecting pods. Every field that is set must match
// (they are ANDed); a rule must set at least one field. The namespaces a rule
// applies to are those named in namespaces and matching namespaceSelector;
// when neither is set, the rule applies to the port's own namespace only.
// +kubebuilder:validation:XValidation:rule="has(self.namespaces) || has(self.namespaceSelector) || has(self.serviceAccounts) || has(self.podSelector)",message="a client rule must set at least one of namespaces, namespaceSelector, serviceAccounts or podSelector"
type ClientRule struct {
	// namespaces names the namespaces clients may connect from.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespaces []string `json:"namespaces,omitempty"`

	// namespaceSelector selects the namespaces clients may connect from by
	// their labels. An empty selector ({}) selects every namespace.
	// +optional
	NamespaceSelector *LabelSelector `json:"namespaceSelector,omitempty"`

	// serviceAccounts names the ServiceAccounts clients may run as, in the
	// namespaces the rule applies to.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`

	// podSelector selects client pods by their labels, in the namespaces the
	// rule applies to.
	// +optional
	PodSelector *LabelSelector `json:"podSelector,omitempty"`
}

// MessagePolicy bounds what travels over the port's connections. Both
// applications of a connection receive it with the channel, and the kalpc
// library enforces it on both ends.
// +kubebuilder:validation:XValidation:rule="self.inlineLimitBytes <= self.maxMessageBytes",message="messagePolicy.inlineLimitBytes must not exceed messagePolicy.maxMessageBytes"
// +kubebuilder:validation:XValidation:rule="self.maxMessageBytes <= self.inlineLimitBytes || self.maxSectionBytesPerConnection >= self.maxMessageBytes",message="messagePolicy.maxSectionBytesPerConnection must be at least messagePolicy.maxMessageBytes, because a message larger than the inline limit travels in a section; lower maxMessageBytes or raise maxSectionBytesPerConnection"
type MessagePolicy struct {
	// inlineLimitBytes is the largest payload copied through the socket;
	// larger payloads travel in a shared-memory section. Between 256 and
	// 64512 (63 KiB, the ALPC figure). Defaults to 64512.
	// +optional
	// +kubebuilder:default=64512
	// +kubebuilder:validation:Minimum=256
	// +kubebuilder:validation:Maximum=64512
	InlineLimitBytes int64 `json:"inlineLimitBytes,omitempty"`

	// maxMessageBytes is the largest message either side may send. At least
	// 256 and at most 16 GiB. Defaults to 268435456 (256 MiB).
	// +optional
	// +kubebuilder:default=268435456
	// +kubebuilder:validation:Minimum=256
	// +kubebuilder:validation:Maximum=17179869184
	MaxMessageBytes int64 `json:"maxMessageBytes,omitempty"`

	// maxSectionBytesPerConnection is the most shared memory (sum of section
	// sizes) one side may have mapped for a connection. 0 disables sections,
	// which requires maxMessageBytes to be at most inlineLimitBytes. At most
	// 64 GiB. Defaults to 268435456 (256 MiB).
	// +optional
	// +kubebuilder:default=268435456
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=68719476736
	MaxSectionBytesPerConnection *int64 `json:"maxSectionBytesPerConnection,omitempty"`

	// maxPendingMessages is how many requests one side may have sent and not
	// yet seen answered on a connection; further calls fail at once. Between
	// 1 and 65536. Defaults to 1024.
	// +optional
	// +kubebuilder:default=1024
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65536
	MaxPendingMessages int32 `json:"maxPendingMessages,omitempty"`

	// maxConnections is how many connections one server pod accepts on the
	// port at once; further connection requests are refused. Between 1 and
	// 65536. Defaults to 1024.
	// +optional
	// +kubebuilder:default=1024
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65536
	MaxConnections int32 `json:"maxConnections,omitempty"`

	// directAccess allows the two sides of a connection to grant each other
	// direct read or write access to memory regions they own. Defaults to
	// false.
	// +optional
	// +kubebuilder:default=false
	DirectAccess *bool `json:"directAccess,omitempty"`
}

// ConnectionPortStatus is the observed state of a ConnectionPort, written by
// the kalpc operator.
type ConnectionPortStatus struct {
	// conditions describe the port's state. The Ready condition is True when
	// at least one server endpoint is ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the metadata.generation of the spec this status
	// was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// readyServers is the number of ready server endpoints over all nodes.
	// Always written, 0 included, so that kubectl shows 0 rather than an
	// empty column.
	// +optional
	ReadyServers int32 `json:"readyServers"`

	// nodes is the number of nodes with at least one ready server endpoint:
	// clients on those nodes can connect.
	// Always written, 0 included.
	// +optional
	Nodes int32 `json:"nodes"`

	// endpoints lists the server pods of the port (selected by spec.servers,
	// running, with the kalpc sidecar), grouped by node and sorted by node
	// name.
	// +optional
	// +listType=map
	// +listMapKey=nodeName
	Endpoints []NodeEndpoints `json:"endpoints,omitempty"`
}

// NodeEndpoints lists the server pods of a port on one node.
type NodeEndpoints struct {
	// nodeName is the name of the node the pods run on.
	// +required
	NodeName string `json:"nodeName"`

	// pods are the server pods on the node, sorted by name.
	// +required
	// +listType=map
	// +listMapKey=name
	Pods []EndpointPod `json:"pods"`
}

// EndpointPod is one server pod of a port.
type EndpointPod struct {
	// name is the pod's name, in the port's namespace.
	// +required
	Name string `json:"name"`

	// uid is the pod's UID. Client sidecars check a server's verified
	// identity against it.
	// +required
	UID types.UID `json:"uid"`

	// ready is true when the pod is ready (its Ready condition is True) and
	// is not being deleted.
	// +required
	Ready bool `json:"ready"`
}

// ConnectionPort is a named port that server pods publish and client pods on
// the same node connect to, as an ALPC connection port on Windows.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=cport,categories=kalpc
// +kubebuilder:printcolumn:name="Servers Ready",type=integer,JSONPath=`.status.readyServers`,description="Ready server endpoints over all nodes"
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.status.nodes`,description="Nodes with at least one ready server"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`,description="Whether a ready server endpoint exists on some node (the Ready condition)"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ConnectionPort struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the port.
	// +required
	Spec ConnectionPortSpec `json:"spec"`

	// status is the observed state of the port, written by the operator.
	// +optional
	Status ConnectionPortStatus `json:"status,omitzero"`
}

// ConnectionPortList is a list of ConnectionPorts.
// +kubebuilder:object:root=true
type ConnectionPortList struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`

	// items are the ConnectionPorts.
	// +required
	Items []ConnectionPort `json:"items"`
}
