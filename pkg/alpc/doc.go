// Package alpc is kalpc's IPC library: the Windows ALPC model (Advanced
// Local Procedure Call) for processes on one Linux host. It depends only on
// the standard library and golang.org/x/sys/unix, never on Kubernetes: any
// two processes can use it, with or without the kalpc sidecar. It compiles
// on macOS and Windows too, so that applications importing it build on a
// developer's machine; there every entry point fails with an error matching
// [ErrUnsupported] (see [Supported]).
//
// # Lifecycle
//
// A server publishes a named connection port: at a socket path with
// [Listen], or, in a Kubernetes pod with the kalpc sidecar, by
// ConnectionPort name through the sidecar with [Publish]. A client connects
// with [Dial] (a path) or [Connect] (a name), sending a connection message.
// Both kinds of port are an [Acceptor], and code that serves connections
// takes one: the server takes each request with Accept, looks at the
// message and at the client ([Peer]: its kernel-reported [Credentials] on a
// Listener, its broker-verified pod [Identity] on a Port), and either
// accepts it with a reply message ([ConnRequest.Accept]) or rejects it with
// a reason ([ConnRequest.Reject]), which the client receives as a
// [*RejectError].
//
// An accepted connection is a private, bidirectional channel: a connected
// AF_UNIX SOCK_SEQPACKET socket pair that no other process can join. Both
// ends are a [Conn] and are equal. Either side may
//
//   - [Conn.Call] the other and wait for its reply (many calls may be in
//     flight at once, each with its own id);
//   - [Conn.Send] a one-way message, handled in order by the peer;
//   - serve the other's requests with its [Config.Handler].
//
// A side blocked in a Call keeps serving its peer's requests, so handlers can
// call back into the caller (callbacks nest to any depth). Cancelling a
// Call's context tells the peer, whose handler's context is cancelled; a
// deadline travels with the request. [Conn.Close] ends the channel; so does
// the peer closing or dying, which the kernel reports at once: pending calls
// fail with [ErrPeerClosed]. [Conn.Shutdown] ends it gracefully instead (a
// server leaving in a rolling update): calls in progress both ways finish,
// and new ones fail on both sides with [ErrGoingAway] without being sent,
// so clients can safely make them again on another connection.
//
// A broker (the kalpc sidecar) can create the channel itself with
// [SocketPair] and hand one end to each process, which wraps it with
// [FileConn].
//
// # Messages and limits
//
// Payloads up to the inline limit (63 KiB by default) are copied through the
// socket queue in one datagram with a 32-byte header (see docs/protocol.md).
// Each side announces its limits in the handshake and the connection uses
// the smaller value of each: [Conn.Limits]. Exceeding a limit gives a clear
// error ([ErrTooLarge], [*LimitError]); a peer that breaks the protocol
// (malformed header, lying length, unexpected descriptors, too many requests
// in flight) ends that connection with a [*ProtocolError] and affects no
// other connection. A peer that stops reading its socket cannot make this
// side queue without bound: writes wait for room in the socket (never in a
// user-space queue), each at most [Config.WriteTimeout], after which that
// connection ends with a [*LimitError]; a handler keeps its slot until its
// answer is written.
//
// # Who owns each descriptor
//
//   - A [Listener] owns its listening socket and its lock file
//     (path + ".lock"); Close removes the socket path and releases both.
//   - A [ConnRequest] from a Listener owns the accepted socket until Accept
//     (which hands it to the new Conn) or Reject (which closes it). A Port
//     owns its control connection to the broker; the channel the broker
//     hands over on Accept goes to the new Conn.
//   - A [Conn] owns its socket and closes it exactly once: after Close, peer
//     hang-up or a protocol error, once no system call is using it.
//   - [FileConn] duplicates the descriptor it is given; the caller keeps and
//     closes its *os.File. [SocketPair] returns two files the caller owns.
//   - Descriptors received from a peer that the protocol does not expect are
//     closed before the connection is ended.
package alpc
