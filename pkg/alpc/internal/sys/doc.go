// Package sys is the only importer of golang.org/x/sys/unix in pkg/alpc: it
// wraps the few Linux system calls the library needs (SOCK_SEQPACKET sockets,
// sendmsg/recvmsg with SCM_RIGHTS, poll, epoll, eventfd) and provides
// [Socket], a file descriptor that is closed exactly once, after every
// system call that uses it has returned. The lock file that guards a
// Listener's path is taken by the module's internal/socklock, which the
// sidecar shares.
//
// Wrappers are named after their system call and return errors wrapped by
// [os.NewSyscallError], so callers can test them with errors.Is against
// unix.Errno values re-exported here (for example [EAGAIN]).
//
// Off Linux the *_other.go files give the same API as stubs: every system
// call wrapper returns an error wrapping errors.ErrUnsupported (see
// [Supported]) and the constants have Linux's values but are never passed
// to a kernel. pkg/alpc therefore compiles on macOS and Windows and fails
// at run time with a clear error. The build tag kalpc_stub selects the
// stubs on Linux too, so tests can run them (go test -tags kalpc_stub).
package sys
