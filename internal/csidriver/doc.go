// Package csidriver is kalpc's CSI node plugin, csi.kalpc.io: it gives the
// node directory (/var/run/kalpc on the host) to the injected sidecars as an
// ephemeral inline CSI volume, so that application pods carry no hostPath
// volume and their namespaces may enforce Pod Security "restricted".
//
// # What it serves
//
// The CSI Identity and Node services (no Controller service: there is
// nothing to provision or attach) on a Unix socket the kubelet calls, and
// the kubelet's plugin registration service (what node-driver-registrar
// does elsewhere) on a socket in the kubelet's plugins_registry directory.
//
//   - NodePublishVolume bind-mounts the node directory at the target path
//     the kubelet gives, with nosuid, nodev and noexec, after checking that
//     the pod asking is a kalpc sidecar's (see [PodChecker]).
//   - NodeUnpublishVolume unmounts it and removes the target directory.
//
// Both are idempotent. The driver keeps no state in memory: what is
// published is read from the mount table (/proc/self/mountinfo) each time,
// so a restarted driver knows every mount its predecessor made, and mounts
// made before a restart stay valid (they belong to the pods' mount
// namespaces, not to the driver process).
//
// # Who may mount
//
// The kubelet passes the pod's name, namespace, UID and ServiceAccount
// (podInfoOnMount in the CSIDriver object). [APIPodChecker] reads that pod
// from the API server and allows the mount only when the volume is mounted
// by exactly one container, the injected native sidecar, running an allowed
// sidecar image with its own entrypoint. A pod that writes the same csi:
// volume into its own spec for an application container is refused; see
// docs/security.md for what remains.
package csidriver
