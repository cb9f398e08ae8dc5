// Package v1alpha1 contains the kalpc.io/v1alpha1 API: the ConnectionPort
// custom resource and the well-known labels that opt pods into kalpc.
//
// # ConnectionPort
//
// A ConnectionPort is kalpc's counterpart of a Windows ALPC connection port: a
// named object, visible to every pod of the cluster, that server pods publish
// and client pods on the same node connect to. Its spec says which pods may
// serve it, which clients may connect and the message policy of every
// connection; its status, written by the kalpc operator, says where the port is
// served, grouped by node.
//
// # Dependencies
//
// This package depends only on apimachinery so that the operator, the sidecar
// and users' programs can import it without pulling in anything else of kalpc.
//
// +kubebuilder:object:generate=true
// +groupName=kalpc.io
package v1alpha1
