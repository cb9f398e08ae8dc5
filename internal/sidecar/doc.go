// Package sidecar is the kalpc sidecar: the connection broker of one pod.
// It serves the pod-local control socket for the pod's applications,
// publishes their ports in the node directory, verifies peers' identities
// and enforces the ConnectionPorts' rules, and hands each application its
// end of a new channel by SCM_RIGHTS. After that it is out of the data path:
// the applications talk over the channel directly.
//
// # Connection flow
//
//		client app --(pod socket)--> client sidecar --(port endpoint)--> server sidecar --(pod socket)--> server app
//
//	 1. The client sidecar lists the port's endpoints in the node directory
//	    and picks one (round robin, skipping dead endpoints).
//	 2. The server sidecar presents its pod's token; the client sidecar
//	    verifies it (TokenReview), checks that the token's pod UID is the
//	    endpoint's, that the process presenting it is the one holding that
//	    pod's identity socket, and that the pod is in the port's namespace and
//	    matches spec.servers. Only then does it present its own token.
//	 3. The server sidecar verifies the client the same way and evaluates the
//	    port's client rules and connection limit, before the server
//	    application sees anything.
//	 4. The server application accepts or rejects. On accept the server
//	    sidecar creates a socket pair and hands one end to each side.
//
// See docs/sidecar.md and docs/security.md.
package sidecar
