// Package socklock guards a Unix socket's path with a lock file beside it,
// so that a socket left by a process that died is replaced safely while a
// live one is never stolen. pkg/alpc's Listener and the sidecar's node
// directory both publish their sockets this way.
//
// # The protocol
//
// An owner of the socket at path P:
//
//  1. creates and flocks P.lock first (Acquire), retrying if the lock file
//     was replaced between open and flock, and failing with ErrInUse if a
//     live process holds it;
//  2. with the lock held, removes whatever socket is at P (it is stale:
//     its owner is dead) and refuses any other kind of file there;
//  3. binds its socket under a temporary name (TempName) and renames it
//     into place, so a client never connects to a half-made socket;
//  4. on close, removes P first and P.lock last, while still holding the
//     lock (Release), so the next owner never sees a half-removed socket.
//
// Anyone may remove an entry whose lock nobody holds (CleanStale,
// CleanOrphanLock). Off Linux, Acquire and the cleaners fail with an error
// wrapping errors.ErrUnsupported.
package socklock
