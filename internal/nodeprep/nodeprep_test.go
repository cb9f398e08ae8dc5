package nodeprep_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kalpc/kalpc/internal/nodeprep"
)

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		spec nodeprep.Spec
		ok   bool
	}{
		{nodeprep.Spec{Path: "/d", UID: 65532, Mode: 0o700}, true},
		{nodeprep.Spec{Path: "/d", UID: 65532, Mode: 0o750}, true},
		{nodeprep.Spec{Path: "", UID: 65532, Mode: 0o700}, false},
		{nodeprep.Spec{Path: "/d", UID: 0, Mode: 0o700}, false},
		{nodeprep.Spec{Path: "/d", UID: 65532, Mode: 0o500}, false},
		{nodeprep.Spec{Path: "/d", UID: 65532, Mode: 0o702}, false},
		{nodeprep.Spec{Path: "/d", UID: 65532, Mode: 0o700 | fs.ModeSetgid}, false},
	} {
		if err := c.spec.Validate(); (err == nil) != c.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", c.spec, err, c.ok)
		}
	}
}

// TestPrepare changes a real directory; it needs root to give it away.
func TestPrepare(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := filepath.Join(t.TempDir(), "kalpc")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := nodeprep.Spec{Path: dir, UID: 65532, GID: -1, Mode: 0o700}
	res, err := nodeprep.Prepare(spec)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Chowned || !res.Chmodded {
		t.Errorf("first Prepare = %+v, want both changes", res)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 65532 || st.Gid != 65532 || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory is %d:%d %v", st.Uid, st.Gid, fi.Mode())
	}
	// A second pass changes nothing.
	if res, err := nodeprep.Prepare(spec); err != nil || res.Chowned || res.Chmodded {
		t.Errorf("second Prepare = %+v, %v, want no change", res, err)
	}
	// A file is refused.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := nodeprep.Prepare(nodeprep.Spec{Path: file, UID: 65532, Mode: 0o700}); err == nil {
		t.Error("Prepare on a regular file succeeded")
	}
}
