// Command image writes a container image for one static Go binary as a
// docker-archive tarball, without a container engine or a registry: the
// image is built in memory with go-containerregistry from a static binary
// (CGO_ENABLED=0) and a few files a distroless-static base would have
// (/etc/passwd with the non-root UID 65532 it runs as, /tmp).
//
// It is the supported way to build an image of your own kalpc application
// where there is no Docker and no registry (docs/own-app.md):
//
//	CGO_ENABLED=0 GOOS=linux go build -trimpath -o _out/myapp .
//	go -C /path/to/kalpc run ./hack/image --binary $PWD/_out/myapp \
//	    --tag example.com/myapp:dev --out $PWD/_out/myapp.tar \
//	    --label org.opencontainers.image.vendor=me
//
// The image carries only the labels you give (title, version, created and
// any --label); --vendor and --source are empty unless asked. `make image`
// runs it for every command under cmd/ with kalpc's own labels. Load the
// tarballs with `ctr -n k8s.io images import` (see docs/quickstart.md for
// the local cluster's socket), `docker load -i`, `kind load image-archive`
// or `podman load -i`, or push them with `crane push`.
//
// The image is reproducible: every timestamp is --epoch (SOURCE_DATE_EPOCH,
// else 0), files are written in a fixed order with fixed owners, so the same
// binary and flags give the same image digest.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// nonRoot is the UID and GID images run as, distroless's "nonroot".
const nonRoot = 65532

// Options describe one image.
type Options struct {
	// Binary is the path of the static binary to put in the image. Required.
	Binary string
	// Name is the binary's name in the image, at /usr/local/bin/<Name>, and
	// the image's title. Required.
	Name string
	// Description is the image's description label.
	Description string
	// Version and Revision become the image's version and revision labels.
	Version, Revision string
	// Source is the source repository label; Vendor the vendor label.
	Source, Vendor string
	// Labels are further image labels; they override the ones above.
	Labels map[string]string
	// Arch is the binary's GOARCH. Defaults to amd64.
	Arch string
	// Epoch is every timestamp in the image. Defaults to the Unix epoch.
	Epoch time.Time
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var o Options
	var tag, out string
	flags := flag.NewFlagSet("image", flag.ContinueOnError)
	flags.StringVar(&o.Binary, "binary", "", "Static binary to put in the image. Required.")
	flags.StringVar(&o.Name, "name", "", "Name of the binary in the image (/usr/local/bin/<name>). Defaults to the binary's file name.")
	flags.StringVar(&o.Description, "description", "", "Image description label.")
	flags.StringVar(&o.Version, "version", "dev", "Image version label.")
	flags.StringVar(&o.Revision, "revision", "", "Source revision label (git commit).")
	flags.StringVar(&o.Source, "source", "", "Source repository label (org.opencontainers.image.source).")
	flags.StringVar(&o.Vendor, "vendor", "", "Vendor label (org.opencontainers.image.vendor); none unless given.")
	flags.Func("label", "Image label `key=value`; repeatable; overrides the labels above.", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("want key=value, got %q", s)
		}
		if o.Labels == nil {
			o.Labels = map[string]string{}
		}
		o.Labels[k] = v
		return nil
	})
	flags.StringVar(&o.Arch, "arch", "amd64", "GOARCH of the binary.")
	epoch := flags.String("epoch", os.Getenv("SOURCE_DATE_EPOCH"), "Unix time of every timestamp in the image. Defaults to $SOURCE_DATE_EPOCH, else 0.")
	flags.StringVar(&tag, "tag", "", "Image reference recorded in the tarball, e.g. ghcr.io/kalpc/kalpc-operator:dev. Required.")
	flags.StringVar(&out, "out", "", "Tarball to write. Required.")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if o.Binary == "" || tag == "" || out == "" {
		return errors.New("--binary, --tag and --out are required")
	}
	if o.Name == "" {
		o.Name = path.Base(o.Binary)
	}
	if *epoch != "" {
		secs, err := strconv.ParseInt(*epoch, 10, 64)
		if err != nil {
			return fmt.Errorf("--epoch: %w", err)
		}
		o.Epoch = time.Unix(secs, 0).UTC()
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("--tag: %w", err)
	}
	img, err := Build(o)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(out, ref, img); err != nil {
		return fmt.Errorf("failed to write %s: %w", out, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s@%s\n", out, ref, digest)
	return nil
}

// Build returns the image for o.
func Build(o Options) (v1.Image, error) {
	if o.Binary == "" || o.Name == "" || strings.Contains(o.Name, "/") {
		return nil, fmt.Errorf("need a binary and a plain name, got %q and %q", o.Binary, o.Name)
	}
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	if o.Epoch.IsZero() {
		o.Epoch = time.Unix(0, 0).UTC()
	}
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("failed to read the binary: %w", err)
	}
	layerTar, err := rootFS(o, bin)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestCompression), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("failed to create the layer: %w", err)
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: o.Epoch},
			CreatedBy: "hack/image: /usr/local/bin/" + o.Name + " and a distroless-like root filesystem",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("failed to add the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", o.Arch
	cf.Created = v1.Time{Time: o.Epoch}
	cf.Config.User = fmt.Sprintf("%d:%d", nonRoot, nonRoot)
	cf.Config.Entrypoint = []string{"/usr/local/bin/" + o.Name}
	cf.Config.WorkingDir = "/"
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       o.Name,
		"org.opencontainers.image.description": o.Description,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.source":      o.Source,
		"org.opencontainers.image.created":     o.Epoch.Format(time.RFC3339),
		"org.opencontainers.image.vendor":      o.Vendor,
	}
	for k, v := range o.Labels {
		cf.Config.Labels[k] = v
	}
	for k, v := range cf.Config.Labels {
		if v == "" {
			delete(cf.Config.Labels, k)
		}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("failed to set the image config: %w", err)
	}
	return img, nil
}

// rootFS returns the image's only layer: the binary, and the few files a
// static binary's environment expects (users for the non-root UID, /tmp).
func rootFS(o Options, bin []byte) ([]byte, error) {
	type entry struct {
		path     string
		mode     int64
		uid, gid int
		data     []byte // nil for directories
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonRoot, nonRoot)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonRoot)
	// Parents before children, in a fixed order.
	entries := []entry{
		{path: "etc/", mode: 0o755},
		{path: "etc/group", mode: 0o644, data: []byte(group)},
		{path: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{path: "home/", mode: 0o755},
		{path: "home/nonroot/", mode: 0o700, uid: nonRoot, gid: nonRoot},
		{path: "root/", mode: 0o700},
		{path: "tmp/", mode: 0o1777},
		{path: "usr/", mode: 0o755},
		{path: "usr/local/", mode: 0o755},
		{path: "usr/local/bin/", mode: 0o755},
		{path: "usr/local/bin/" + o.Name, mode: 0o755, data: bin},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.path,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: o.Epoch,
			Format:  tar.FormatPAX,
		}
		if e.data == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
