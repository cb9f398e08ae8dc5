package main

import (
	"testing"
	"time"

	"github.com/kalpc/kalpc/examples/internal/exampletest"
)

func TestMain(m *testing.M) { exampletest.Main(m, main) }

// TestEcho runs the server and clients as separate processes: a client
// started before the server waits for it, calls, gets a callback and moves
// 16 MiB both ways; mallory is rejected; the server stops on SIGTERM.
func TestEcho(t *testing.T) {
	sock := exampletest.Socket(t)
	alice := exampletest.Start(t, "client", "-socket", sock, "-name", "alice")
	server := exampletest.Start(t, "server", "-socket", sock)
	server.WaitFor(t, "published socket "+sock, 5*time.Second)

	out, err := alice.Wait(t, 20*time.Second)
	if err != nil {
		t.Fatalf("alice: %v\n%s", err, out)
	}
	exampletest.Contains(t, out,
		`client: connected to socket `+sock+`; server said "hello alice, I am pid`,
		`client: call(ping) = "ping"`,
		`client: server called back: "who are you?"`,
		`client: call(shout) = "HELLO KALPC, alice!"`,
		"client: 16 MiB echoed through shared-memory sections in",
		"content verified",
		"read in place by the server (16777216 bytes)",
	)

	out, err = exampletest.Run(t, 10*time.Second, "client", "-socket", sock, "-name", "mallory")
	if err == nil {
		t.Errorf("mallory's client succeeded; output:\n%s", out)
	}
	exampletest.Contains(t, out, "mallory was rejected by the server: mallory is not welcome here")

	out, err = server.Stop(t)
	if err != nil {
		t.Errorf("server: %v", err)
	}
	exampletest.Contains(t, out, `server: accepted "alice" from pid`, `server: rejecting "mallory"`, `"alice" disconnected`)
}

// TestDemo runs `echo demo` (make demo-local): a server and two clients.
func TestDemo(t *testing.T) {
	out, err := exampletest.Run(t, 30*time.Second, "demo")
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	exampletest.Contains(t, out, `call(shout) = "HELLO KALPC, alice!"`, "mallory was rejected", "demo: done")
}
