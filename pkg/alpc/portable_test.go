//go:build linux && !kalpc_stub

package alpc_test

import (
	"os"
	"os/exec"
	"testing"
)

// TestPortable proves that pkg/alpc/... (pkg/alpc/alpcgrpc included) compiles
// and vets, test files included, for macOS and Windows, and that the stubs
// those platforms get fail at run time as documented: it runs go vet for
// each platform and, on this machine, the stub tests (TestUnsupported,
// TestFallbackOffLinux) with -tags kalpc_stub, which selects the same
// stubs on Linux.
func TestPortable(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles pkg/alpc/... for four platforms")
	}
	goBin, err := exec.LookPath("go") // go test puts its own GOROOT/bin first on PATH
	if err != nil {
		t.Skip("no go command:", err)
	}
	run := func(t *testing.T, env []string, args ...string) {
		t.Helper()
		cmd := exec.Command(goBin, args...)
		cmd.Dir = "." // pkg/alpc: ./... is pkg/alpc/...
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%v go %v: %v\n%s", env, args, err, out)
		}
	}
	for _, p := range []struct{ goos, goarch string }{
		{"darwin", "amd64"}, {"darwin", "arm64"}, {"windows", "amd64"}, {"windows", "arm64"},
	} {
		t.Run(p.goos+"_"+p.goarch, func(t *testing.T) {
			run(t, []string{"GOOS=" + p.goos, "GOARCH=" + p.goarch, "CGO_ENABLED=0"}, "vet", "./...")
		})
	}
	t.Run("stubs", func(t *testing.T) {
		run(t, []string{"CGO_ENABLED=0"}, "test", "-count=1", "-tags", "kalpc_stub", "./...")
	})
}
