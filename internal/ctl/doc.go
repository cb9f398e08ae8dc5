// Package ctl is kalpc's control protocol: the messages an application's
// kalpc library exchanges with its pod's sidecar over the pod-local control
// socket, and the messages two sidecars exchange over a port's socket in the
// node directory. It is shared by pkg/alpc (the library side) and
// internal/sidecar (the broker side), depends only on the standard library,
// and knows nothing of Kubernetes.
//
// # Framing
//
// Both sockets are AF_UNIX SOCK_SEQPACKET: one message is one datagram. A
// datagram is an 8-byte header (magic "KC", version, type, body length)
// followed by exactly that many body bytes; a channel's descriptor travels
// with its message as SCM_RIGHTS. See docs/sidecar.md for the field layout.
//
// # Strictness
//
// [Decode] refuses anything it does not fully understand: a bad magic or
// version, an unknown type, a length that does not match the datagram,
// fields out of range or of invalid UTF-8, names that are not Kubernetes
// object names, and trailing bytes. [Read] additionally refuses truncated
// datagrams and control messages, and a descriptor count other than the one
// the message type carries; descriptors that arrive with a refused message
// are closed. The decoder is fuzzed (FuzzDecode).
package ctl
