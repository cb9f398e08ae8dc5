// Command nodeprep prepares the kalpc node directory on every node (the
// kalpc-nodeprep DaemonSet of the Helm chart runs it): it makes the host's
// /var/run/kalpc, mounted at --dir, owned by the sidecar's UID and GID with
// mode --mode, checks it again every --interval, and otherwise waits for
// SIGTERM.
//
// It runs as UID 0 because changing a root-owned directory's owner takes
// CAP_CHOWN, and needs no other capability; see internal/nodeprep for why and
// docs/install.md for how the chart locks it down.
package main
