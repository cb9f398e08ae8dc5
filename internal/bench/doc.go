// Package bench is kalpc's benchmark harness: it measures kalpc against the
// floors it is built on (a raw SOCK_SEQPACKET ping-pong, one in-process
// copy) and against what users run today (gRPC over TCP across a veth pair,
// over loopback and over a Unix socket), in one run, so that the ratios hold
// on a noisy machine. cmd/kalpc-bench is its command line.
//
// # Processes and namespaces
//
// Every cell (one transport at one payload size) runs in a fresh server
// process and a fresh client process, both the harness's own binary
// re-executed with the hidden ChildCommand. When the harness runs as root
// with iproute2, it creates two network namespaces joined by a veth pair
// with a private /30 and starts the server in one and the client in the
// other, exactly like two pods on one node: they share only a temporary
// directory for Unix sockets, and TCP crosses the veth pair. Without root it
// falls back to the current namespace and says so in the report.
//
// The harness removes its namespaces, its directory and its processes when
// the run ends, when it fails, and when it is interrupted (the command turns
// SIGINT and SIGTERM into context cancellation). Children die with the
// harness (PR_SET_PDEATHSIG), and a run first deletes namespaces left by a
// harness that was killed outright.
//
// # Control channel
//
// The harness drives each child over its stdin and stdout with one JSON
// object per line (see control.go): it takes the server's resource usage
// right before and after the client's measured phase, so CPU time per
// operation covers both processes and excludes start-up and warm-up.
//
// # Transports
//
// Transports implement the Transport interface and are registered, in
// report order, with Register. A transport that cannot carry a size (kalpc
// inline above the inline limit, the veth row without namespaces) reports
// that cell as unavailable with the reason, so a report always has every
// row.
//
// # Output
//
// Run returns a Report, which is written as JSON (schema SchemaVersion,
// documented in docs/performance.md), as markdown and as a log-log plot of
// round-trip time against payload size.
package bench
