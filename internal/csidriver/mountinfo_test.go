package csidriver

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sampleMountInfo = `22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw
25 22 0:23 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755
30 25 0:23 /kalpc /var/run/kalpc/node rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
41 22 0:23 /kalpc /var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/kalpc-node/mount rw,nosuid,nodev,noexec shared:9 - tmpfs tmpfs rw
42 22 0:23 /other /var/lib/kubelet/pods/u2/volumes/kubernetes.io~csi/x/mount rw - tmpfs tmpfs rw
43 22 0:24 /a\040b /mnt/with\040space rw - tmpfs tmpfs rw
`

func TestParseMounts(t *testing.T) {
	mounts, err := parseMounts(strings.NewReader(sampleMountInfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 6 {
		t.Fatalf("parsed %d mounts, want 6", len(mounts))
	}
	if diff := cmp.Diff(mount{Dev: "0:24", Root: "/a b", Point: "/mnt/with space", Options: "rw"}, mounts[5]); diff != "" {
		t.Errorf("escaped line (-want +got):\n%s", diff)
	}
	src, err := findSource(mounts, "/var/run/kalpc/node")
	if err != nil || src != (source{Dev: "0:23", Root: "/kalpc"}) {
		t.Errorf("findSource(node dir) = %+v, %v", src, err)
	}
	// A directory below a mount point: its root is the path inside.
	src, err = findSource(mounts, "/run/kalpc")
	if err != nil || src != (source{Dev: "0:23", Root: "/kalpc"}) {
		t.Errorf("findSource(/run/kalpc) = %+v, %v", src, err)
	}
	if at := mountsAt(mounts, "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/kalpc-node/mount"); len(at) != 1 || at[0].Root != "/kalpc" {
		t.Errorf("mountsAt() = %+v", at)
	}

	for _, bad := range []string{"1 2 3\n", "x"} {
		if _, err := parseMounts(strings.NewReader(bad)); err == nil {
			t.Errorf("parseMounts(%q) succeeded", bad)
		}
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:       "/plain",
		`/a\040b`:      "/a b",
		`/tab\011x`:    "/tab\tx",
		`/back\134`:    `/back\`,
		`/short\04`:    `/short\04`,
		`/notoctal\9x`: `/notoctal\9x`,
		`\`:            `\`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}
