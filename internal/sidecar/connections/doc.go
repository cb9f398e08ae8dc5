// Package connections is the sidecar's read-only list of the connections it
// brokered as the server side, served as JSON at [Path] on the sidecar's
// metrics server, and the types `kubectl kalpc connections` decodes.
//
// # What the list means
//
// A server sidecar records a connection when it hands the two ends of a new
// channel to the client sidecar and to its server application. It drops the
// record when:
//
//   - the server application reports that the channel ended (the kalpc
//     library sends a closed message when its Conn ends, which happens at once
//     when either application closes its end or dies, because the channel
//     is a socket pair), or
//   - the publication ends: the server application closed its Port or
//     exited, or the sidecar shut down.
//
// So the list is "connections brokered by this sidecar, during this
// sidecar's run, to an application that still publishes the port and has not
// reported the channel closed". A channel that outlives its publication (the
// application closed the Port but kept the Conn) or the sidecar (a restarted
// sidecar starts with an empty list) is not listed, although it still works:
// the sidecar is not on the data path and cannot see the channel itself.
// Client sidecars record nothing: a client sidecar hands the channel over and
// forgets it, with no way to learn when it ends.
//
// Only metadata is listed: ids, the verified identities of both pods, the
// port and the time the channel was handed over. No message payload ever
// passes through a sidecar, and none is listed.
//
// The sidecar serves the list only to callers the API server authenticates
// and allows get on pods/proxy of the sidecar's pod (package httpauth), since
// it names client pods of other namespaces.
package connections
