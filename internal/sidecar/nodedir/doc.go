// Package nodedir manages the kalpc node directory: the host directory
// (/var/run/kalpc, mounted into every sidecar at --node-dir) through which
// the sidecars of one node find each other.
//
// # Layout
//
//	<root>/pods/<pod-uid>.sock                        identity socket of a pod's sidecar
//	<root>/pods/<pod-uid>.sock.lock                   held (flock) while that sidecar lives
//	<root>/ports/<namespace>/<name>/<pod-uid>.sock    a server pod's endpoint of a port
//	<root>/ports/<namespace>/<name>/<pod-uid>.sock.lock
//
// Directories are created 0700 and sockets and locks 0600: every sidecar
// runs as the same UID, and nothing else on the node needs access.
//
// # Ownership and stale entries
//
// An entry (socket plus lock) belongs to the process holding its lock's
// flock. The kernel drops the flock when that process dies, however it
// dies, so an entry whose lock can be taken is stale: [Sweep] and
// [CleanStale] remove it while holding the lock, socket first, so that a
// live entry is never removed and a new owner never sees half an entry.
// A sidecar sweeps at start and periodically; a client sidecar cleans an
// endpoint it cannot connect to.
//
// # Peer binding
//
// [PeerProcess] identifies the process at the other end of a connected
// socket by the inode of its pidfd (SO_PEERPIDFD; pidfs gives every process
// a unique inode, across PID namespaces). Comparing it with the process
// that listens on a pod's identity socket ([Dir.IdentityProcess]) binds a
// verified token to the process presenting it; see docs/security.md.
//
// # Path lengths
//
// A port name can be 253 characters, more than fits in a sockaddr_un, so
// sockets are bound and connected through /proc/self/fd/<dirfd>/<pod-uid>.sock:
// only the short last component counts.
package nodedir
