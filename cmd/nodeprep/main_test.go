package main

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMain lets the tests run this command in a child process: with
// KALPC_NODEPREP_RUN set, the test binary is kalpc-nodeprep.
func TestMain(m *testing.M) {
	if os.Getenv("KALPC_NODEPREP_RUN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestPrepareWithOnlyCapChown runs the command as UID 0, GID 65534, with
// CHOWN as its only capability, as the DaemonSet does, on the directories the kubelet or a
// drift leave behind.
func TestPrepareWithOnlyCapChown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to own directories as another UID")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux) to drop capabilities")
	}
	for _, tc := range []struct {
		name      string
		uid, gid  int
		mode      fs.FileMode
		wantError string
	}{
		{name: "created by the kubelet", uid: 0, gid: 0, mode: 0o755},
		{name: "mode drifted while owned by the sidecar", uid: 65532, gid: 65532, mode: 0o777},
		{name: "owned by another user", uid: 1000, gid: 1000, mode: 0o700},
		{name: "already prepared", uid: 65532, gid: 65532, mode: 0o700},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "kalpc")
			if err := os.Mkdir(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.mode); err != nil { // no umask
				t.Fatal(err)
			}
			if err := os.Chown(dir, tc.uid, tc.gid); err != nil {
				t.Fatal(err)
			}
			// GID 65534 and no supplementary groups, as the chart's
			// nodePrep.runAsGroup: chown and chmod need no group.
			cmd := exec.Command(setpriv, "--regid=65534", "--clear-groups", "--bounding-set=-all,+chown", "--inh-caps=-all", "--",
				os.Args[0], "-dir", dir, "-uid", "65532", "-mode", "0700", "-once")
			cmd.Env = append(os.Environ(), "KALPC_NODEPREP_RUN=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("kalpc-nodeprep failed: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "The node directory is ready") {
				t.Errorf("output does not say the directory is ready:\n%s", out)
			}
			fi, err := os.Lstat(dir)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if st.Uid != 65532 || st.Gid != 65532 || fi.Mode().Perm() != 0o700 || !fi.IsDir() {
				t.Errorf("directory is %d:%d %v, want 65532:65532 drwx------", st.Uid, st.Gid, fi.Mode())
			}
		})
	}
}

// TestWithoutCapChown shows that the one capability is needed: without it
// the command fails with a clear error instead of pretending.
func TestWithoutCapChown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux) to drop capabilities")
	}
	dir := filepath.Join(t.TempDir(), "kalpc")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--bounding-set=-all", "--inh-caps=-all", "--",
		os.Args[0], "-dir", dir, "-once")
	cmd.Env = append(os.Environ(), "KALPC_NODEPREP_RUN=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("kalpc-nodeprep succeeded without CAP_CHOWN:\n%s", out)
	}
	if !strings.Contains(string(out), "operation not permitted") {
		t.Errorf("error does not say the operation was not permitted:\n%s", out)
	}
}

func TestRejectsBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-dir", dir, "-uid", "0"},
		{"-dir", dir, "-mode", "0777"},
		{"-dir", dir, "-mode", "0600"},
		{"-dir", dir, "-mode", "rwx"},
		{"-dir", dir, "-mode", "04700"},
		{"-dir", filepath.Join(dir, "missing"), "-once"},
		{"-dir", dir, "-interval", "-1s"},
		{"-dir", dir, "extra"},
		{"-dir", dir, "-kubelet-dir", dir, "-sidecar-image", "s:1", "-node-name", ""},
		{"-dir", dir, "-kubelet-dir", dir, "-node-name", "n1"},
		{"-dir", dir, "-kubelet-dir", dir, "-node-name", "n1", "-sidecar-image", " , "},
		{"-dir", dir, "-kubelet-dir", dir, "-node-name", "n1", "-sidecar-image", "s:1", "-once"},
	} {
		if err := run(args); err == nil {
			t.Errorf("run(%q) succeeded, want an error", args)
		}
	}
}

func TestRejectsSymlink(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"-dir", link, "-uid", "65532", "-once"})
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("run on a symlink: got %v, want a not-a-directory error", err)
	}
}
