// Command sidecar is the kalpc sidecar: the connection broker the kalpc
// operator injects into opted-in pods as a native sidecar. It serves the
// pod-local control socket for the pod's applications and brokers their
// connections through the node directory (see internal/sidecar and
// docs/sidecar.md). The operator starts it with the arguments and
// environment described in docs/operations.md ("The sidecar's contract").
package main
