// Package skew builds the previous kalpc release from its source, for the
// version-skew tests: the current library and sidecar must talk to the
// previous release's in both directions (docs/protocol.md, "Versions and
// compatibility"). It is for tests only.
//
// # The previous release
//
// [PreviousRelease] is the commit the tests build. kalpc has no release tags
// yet, so it is pinned here, in this one place. At each release, set it to
// the commit of the release before the one being cut (the last commit that
// passed CI end to end), run `make test-skew`, and commit both; when tags
// exist, set it to the previous tag's commit.
//
// # What a test gets
//
// [Tree] extracts that commit's source (git archive) into a temporary
// directory, [CopyCurrent] copies a directory of the current tree into it
// (a small program that must then compile against the old packages), and
// [Build] builds a package of that tree with the same Go toolchain, module
// cache and build cache as the test, into the test's temporary directory.
//
// Without git or without the commit in the repository (a shallow clone, a
// source archive) the tests skip with the reason; with KALPC_REQUIRE_SKEW=1
// in the environment (CI sets it) they fail instead.
package skew

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// PreviousRelease is the commit of the previous release, which the skew
// tests build. See the package documentation for how to bump it.
const PreviousRelease = "7f82be86d985c1706cc548b977568b5b8275a277"

// EnvRequire is the environment variable that, set to 1, turns the tests'
// skip into a failure when the previous release cannot be built from git.
const EnvRequire = "KALPC_REQUIRE_SKEW"

// buildTimeout bounds each git and go command.
const buildTimeout = 5 * time.Minute

// Root returns the root of the current source tree.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// unavailable skips t, or fails it when EnvRequire is set.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s (%s=1: the version-skew tests must run)", msg, EnvRequire)
	}
	t.Skipf("skipping the version-skew test: %s (set %s=1 to make this a failure)", msg, EnvRequire)
}

func run(t testing.TB, dir string, stdout *bytes.Buffer, name string, args ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return nil
}

// Tree extracts PreviousRelease's source into a new temporary directory of
// t and returns the directory.
func Tree(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		unavailable(t, "git is not installed")
	}
	root := Root()
	if err := run(t, root, nil, "git", "cat-file", "-e", PreviousRelease+"^{commit}"); err != nil {
		unavailable(t, "the previous release %s is not in this repository (a shallow clone?): %v", PreviousRelease, err)
	}
	dir := t.TempDir()
	start := time.Now()
	var tar bytes.Buffer
	if err := run(t, root, &tar, "git", "archive", "--format=tar", PreviousRelease); err != nil {
		t.Fatal(err)
	}
	if err := untar(&tar, dir); err != nil {
		t.Fatalf("extracting %s: %v", PreviousRelease, err)
	}
	t.Logf("previous release %.12s extracted in %v", PreviousRelease, time.Since(start).Round(time.Millisecond))
	return dir
}

// CopyCurrent copies the regular .go files (tests excluded) of directory
// rel of the current tree, and of its subdirectories, to the same place in
// tree, replacing what is there.
func CopyCurrent(t testing.TB, tree, rel string) {
	t.Helper()
	src := filepath.Join(Root(), rel)
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		r, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(tree, rel, r)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copying %s into the previous release's tree: %v", rel, err)
	}
}

// Build builds package pkg ("./cmd/sidecar") of tree into t's temporary
// directory and returns the binary. It uses the test's Go toolchain, module
// cache and build cache (the module proxy only for modules the cache lacks)
// and no race detector.
func Build(t testing.TB, tree, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	start := time.Now()
	if err := run(t, tree, nil, "go", "build", "-buildvcs=false", "-o", bin, pkg); err != nil {
		t.Fatalf("building %s of the previous release %.12s (it must compile against that release's API): %v", pkg, PreviousRelease, err)
	}
	t.Logf("built %s of %.12s in %v", pkg, PreviousRelease, time.Since(start).Round(time.Millisecond))
	return bin
}
