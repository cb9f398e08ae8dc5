//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestOwnApp does what docs/own-app.md tells a user to: in a directory
// outside the repository, a module of its own (go.mod with a replace of
// github.com/kalpc/kalpc to this clone) and its own main.go, both taken
// from the page's code blocks; a static build; an image tarball written
// with `go -C <clone> run ./hack/image`; `ctr … images import` into the
// local cluster's containerd; and the page's manifest: a namespace, a
// ConnectionPort, the server Deployment and the client Job, injected by
// label. The client checks both replies (a greeting and a 1 MiB one through
// shared memory); the test reads them in its logs, and the client's
// verified identity in the server's.
func TestOwnApp(t *testing.T) {
	if os.Getenv("LOAD_IMAGES") == "0" {
		t.Skip("LOAD_IMAGES=0: the image of the user's app cannot be loaded into a foreign cluster's nodes")
	}
	page, err := os.ReadFile(filepath.Join(root, "docs", "own-app.md"))
	if err != nil {
		t.Fatal(err)
	}
	var goMod, mainGo, manifest string
	for _, m := range regexp.MustCompile("(?s)```(\\w*)\n(.*?)```").FindAllStringSubmatch(string(page), -1) {
		switch lang, body := m[1], m[2]; {
		case lang == "" && strings.HasPrefix(body, "module "):
			goMod = body
		case lang == "go" && mainGo == "":
			mainGo = body
		case lang == "yaml" && manifest == "":
			manifest = body
		}
	}
	if goMod == "" || mainGo == "" || manifest == "" {
		t.Fatal("docs/own-app.md lacks the go.mod, main.go or manifest block")
	}
	clone, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	goMod = strings.ReplaceAll(goMod, "/path/to/kalpc", clone)

	app := t.TempDir()
	if rel, err := filepath.Rel(clone, app); err == nil && !strings.HasPrefix(rel, "..") {
		t.Fatalf("the application's directory %s is inside the repository", app)
	}
	for name, content := range map[string]string{"go.mod": goMod, "main.go": mainGo, "greeter.yaml": manifest} {
		if err := os.WriteFile(filepath.Join(app, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sh := func(env []string, name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = app
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// The page's steps, as written there.
	sh(nil, "go", "mod", "tidy")
	sh([]string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64"}, "go", "build", "-trimpath", "-o", "_out/greeter", ".")
	out := sh(nil, "go", "-C", clone, "run", "./hack/image", "--binary", filepath.Join(app, "_out", "greeter"),
		"--tag", "example.com/greeter:dev", "--out", filepath.Join(app, "_out", "greeter.tar"),
		"--label", "org.opencontainers.image.source=https://example.com/greeter")
	t.Logf("image: %s", strings.TrimSpace(out))
	sh(nil, "ctr", "-a", "/run/kalpc-local-cluster/containerd.sock", "-n", "k8s.io", "images", "import", "_out/greeter.tar")

	const namespace = "greeter"
	_, _ = kcErr("delete", "namespace", namespace, "--ignore-not-found", "--wait")
	t.Cleanup(func() {
		dump(t, namespace)
		_, _ = kcErr("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")
	})
	kc(t, "apply", "-f", filepath.Join(app, "greeter.yaml"))
	kc(t, "-n", namespace, "rollout", "status", "deployment/greeter-server", "--timeout", "180s")

	status := waitJobStatus(t, namespace, "greeter-client", 4*time.Minute)
	logs, _ := kcErr("-n", namespace, "logs", "job/greeter-client", "-c", "client")
	if status != "succeeded" {
		t.Fatalf("greeter-client %s; logs:\n%s", status, logs)
	}
	t.Logf("client:\n%s", logs)
	for _, want := range []string{`connected, the server said "welcome"`, "reply: hello, world\n", "1 MiB reply verified"} {
		if !strings.Contains(logs, want) {
			t.Errorf("client logs lack %q", want)
		}
	}
	server := kc(t, "-n", namespace, "logs", "deployment/greeter-server", "-c", "server")
	t.Logf("server:\n%s", server)
	for _, want := range []string{"published greeter", "connection from greeter/greeter-client-", "(serviceaccount greeter-client, uid ", `saying "hi from world"`} {
		if !strings.Contains(server, want) {
			t.Errorf("server logs lack %q", want)
		}
	}
}
