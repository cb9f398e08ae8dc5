// Package nodeprep prepares the kalpc node directory on a host so that the
// injected sidecars, which run as a non-root UID, can create their port
// sockets in it.
//
// # Why this exists
//
// The sidecar mounts the host directory /var/run/kalpc (through kalpc's CSI
// driver, internal/csidriver, or as a hostPath volume of type
// DirectoryOrCreate). When the kubelet or the DaemonSet creates it, it is
// owned by root with mode 0755, so a sidecar running as UID 65532 cannot
// create anything in it. /var/run is a tmpfs on most hosts, so the directory
// disappears on every reboot and has to be prepared again.
//
// # What it does, and nothing more
//
// [Prepare] sets the owner, group and permission bits of exactly one
// directory, the mount point of the node directory, and never looks inside
// it. It refuses a path that is not a directory or is a symbolic link. It
// needs only CAP_CHOWN: when the permission bits must change on a directory
// that it does not own, it first takes ownership (chown to its own UID), then
// changes the bits as their owner, then hands the directory to the sidecar
// UID. The kalpc-nodeprep DaemonSet runs it as UID 0 with every capability
// dropped except CHOWN, no ServiceAccount token and a read-only root
// filesystem; see docs/install.md.
package nodeprep
