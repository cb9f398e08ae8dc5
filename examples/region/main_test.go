package main

import (
	"testing"
	"time"

	"github.com/kalpc/kalpc/examples/internal/exampletest"
)

func TestMain(m *testing.M) { exampletest.Main(m, main) }

// TestRegion runs a server and two clients, one after the other, as
// separate processes: each reads the shared read-only catalog in place
// (the second sees the first's version bump), is refused a write to it,
// exchanges data through its read-write scratch region, and loses both
// regions when the server revokes them.
func TestRegion(t *testing.T) {
	sock := exampletest.Socket(t)
	server := exampletest.Start(t, "server", "-socket", sock)
	server.WaitFor(t, "published socket "+sock, 5*time.Second)

	for i, version := range []string{"0 -> 1", "1 -> 2"} {
		out, err := exampletest.Run(t, 10*time.Second, "client", "-socket", sock)
		if err != nil {
			t.Fatalf("client %d: %v\n%s", i, err, out)
		}
		exampletest.Contains(t, out,
			"client: connected to socket "+sock,
			"client: granted catalog (1048576 bytes, read-only) and scratch (65536 bytes, read-write)",
			"client: read the catalog in place; sha256 matches the server's",
			"client: writing the catalog is refused: alpc: region is read-only",
			"client: catalog version "+version+", seen in place",
			`the server answered in it: "server read `,
			"client: after revocation both regions are gone: alpc: region not granted",
			"region: all checks passed",
		)
	}
	out, err := server.Stop(t)
	if err != nil {
		t.Errorf("server: %v", err)
	}
	exampletest.Contains(t, out, `server: client wrote "hello from pid `)
}
