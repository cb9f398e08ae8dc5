// Command nodeprep prepares the kalpc node directory on every node (the
// kalpc-nodeprep DaemonSet of the Helm chart runs it): it makes the host's
// /var/run/kalpc, mounted at --dir, owned by the sidecar's UID and GID with
// mode --mode, checks it again every --interval, and otherwise waits for
// SIGTERM.
//
// With --kubelet-dir it also serves kalpc's CSI node plugin (csi.kalpc.io,
// internal/csidriver), which bind-mounts that directory into each injected
// sidecar as an ephemeral inline volume, and registers it with the kubelet:
// one privileged component per node, so that application pods need no
// hostPath volume. That mode needs CAP_SYS_ADMIN and mount propagation into
// the kubelet directory, so the chart runs it privileged.
//
// It runs as UID 0 because changing a root-owned directory's owner takes
// CAP_CHOWN, and needs no other capability; see internal/nodeprep for why and
// docs/install.md for how the chart locks it down.
package main
