package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// buildNodePrep builds the smallest kalpc command as a static binary.
func buildNodePrep(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kalpc-nodeprep")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", bin, "../../cmd/nodeprep")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("failed to build kalpc-nodeprep: %v\n%s", err, out)
	}
	return bin
}

// TestImageTarball writes an image tarball as `make image` does, loads it
// back as `docker load` would read it, checks its config and files, and
// runs the entrypoint taken out of the image.
func TestImageTarball(t *testing.T) {
	bin := buildNodePrep(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "kalpc-nodeprep.tar")
	args := []string{"--binary", bin, "--tag", "ghcr.io/kalpc/kalpc-nodeprep:v1.2.3", "--version", "v1.2.3",
		"--revision", "abc123", "--description", "kalpc node preparation", "--epoch", "1700000000", "--out", out,
		"--vendor", "kalpc", "--source", "https://github.com/kalpc/kalpc"} // as `make image` does
	if err := run(args); err != nil {
		t.Fatal(err)
	}

	tag, _ := name.NewTag("ghcr.io/kalpc/kalpc-nodeprep:v1.2.3")
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("the tarball does not load: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (non-root)", cf.Config.User)
	}
	if diff := cmp.Diff([]string{"/usr/local/bin/kalpc-nodeprep"}, cf.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-want +got):\n%s", diff)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.title":       "kalpc-nodeprep",
		"org.opencontainers.image.description": "kalpc node preparation",
		"org.opencontainers.image.version":     "v1.2.3",
		"org.opencontainers.image.revision":    "abc123",
		"org.opencontainers.image.source":      "https://github.com/kalpc/kalpc",
		"org.opencontainers.image.created":     "2023-11-14T22:13:20Z",
		"org.opencontainers.image.vendor":      "kalpc",
	}
	if diff := cmp.Diff(wantLabels, cf.Config.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if cf.Created.Unix() != 1700000000 {
		t.Errorf("created %v, want the epoch", cf.Created)
	}

	// The files, from the flattened filesystem.
	files := map[string]*tar.Header{}
	var entrypoint []byte
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
		if h.Name == "usr/local/bin/kalpc-nodeprep" {
			if entrypoint, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
		if h.Name == "etc/passwd" {
			data, _ := io.ReadAll(tr)
			if !strings.Contains(string(data), "nonroot:x:65532:65532:") {
				t.Errorf("/etc/passwd has no nonroot user:\n%s", data)
			}
		}
		if h.ModTime.Unix() != 1700000000 {
			t.Errorf("%s has mtime %v, want the epoch", h.Name, h.ModTime)
		}
	}
	for p, mode := range map[string]int64{"usr/local/bin/kalpc-nodeprep": 0o755, "tmp": 0o1777, "etc/passwd": 0o644, "home/nonroot": 0o700} {
		h, ok := files[p]
		if !ok {
			t.Errorf("image has no %s", p)
			continue
		}
		if h.Mode != mode {
			t.Errorf("%s has mode %o, want %o", p, h.Mode, mode)
		}
	}
	if h := files["home/nonroot"]; h != nil && (h.Uid != 65532 || h.Gid != 65532) {
		t.Errorf("/home/nonroot owned by %d:%d", h.Uid, h.Gid)
	}

	// The entrypoint is the static binary and runs on its own.
	want, _ := os.ReadFile(bin)
	if !bytes.Equal(entrypoint, want) {
		t.Fatal("the entrypoint in the image is not the binary")
	}
	extracted := filepath.Join(t.TempDir(), "entrypoint")
	if err := os.WriteFile(extracted, entrypoint, 0o755); err != nil {
		t.Fatal(err)
	}
	usage, _ := exec.Command(extracted, "-h").CombinedOutput()
	if !strings.Contains(string(usage), "-uid") {
		t.Errorf("the image's entrypoint does not run:\n%s", usage)
	}
}

// TestReproducible builds the same image twice and expects the same bytes.
func TestReproducible(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(bin, []byte("#!/not/really/a/binary\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sum := func() [32]byte {
		out := filepath.Join(t.TempDir(), "image.tar")
		if err := run([]string{"--binary", bin, "--name", "kalpc-x", "--tag", "kalpc/x:dev", "--out", out, "--epoch", "0"}); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(data)
	}
	if a, b := sum(), sum(); a != b {
		t.Errorf("two builds differ: %x != %x", a, b)
	}
}

func TestRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--tag", "x:y", "--out", "o.tar"},
		{"--binary", "b", "--out", "o.tar"},
		{"--binary", "/nonexistent", "--tag", "kalpc/x:dev", "--out", filepath.Join(t.TempDir(), "o.tar")},
		{"--binary", "b", "--tag", "NOT A TAG", "--out", "o.tar"},
		{"--binary", "b", "--tag", "kalpc/x:dev", "--out", "o.tar", "--epoch", "yesterday"},
	} {
		if err := run(args); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

// TestUserImage: a user's own application image carries the user's
// labels, and none of kalpc's (it was labelled vendor=kalpc and
// source=github.com/kalpc/kalpc whatever it held).
func TestUserImage(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "blobstore")
	if err := os.WriteFile(bin, []byte("#!/not/really/a/binary\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "blobstore.tar")
	if err := run([]string{"--binary", bin, "--tag", "example.com/blobstore:dev", "--out", out, "--epoch", "0",
		"--label", "org.opencontainers.image.vendor=Example Inc.", "--label", "team=storage"}); err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("example.com/blobstore:dev")
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"org.opencontainers.image.title":   "blobstore",
		"org.opencontainers.image.version": "dev",
		"org.opencontainers.image.created": "1970-01-01T00:00:00Z",
		"org.opencontainers.image.vendor":  "Example Inc.",
		"team":                             "storage",
	}
	if diff := cmp.Diff(want, cf.Config.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"/usr/local/bin/blobstore"}, cf.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-want +got):\n%s", diff)
	}
	if err := run([]string{"--binary", bin, "--tag", "example.com/blobstore:dev", "--out", out, "--label", "novalue"}); err == nil {
		t.Error("--label without = accepted")
	}
}
