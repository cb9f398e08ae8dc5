package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kalpc/kalpc/internal/csidriver"
	"github.com/kalpc/kalpc/internal/nodeprep"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "kalpc-nodeprep:", err)
		os.Exit(1)
	}
}

// run parses args, prepares the directory and keeps it prepared until SIGTERM
// or SIGINT.
func run(args []string) error {
	flags := flag.NewFlagSet("nodeprep", flag.ContinueOnError)
	dir := flags.String("dir", "/var/run/kalpc/node", "Mount point of the host's node directory (/var/run/kalpc).")
	uid := flags.Int("uid", 65532, "UID that must own the directory: the sidecar's (--sidecar-run-as-user of the operator).")
	gid := flags.Int("gid", -1, "GID of the directory. Defaults to --uid, as the sidecar runs with GID = UID.")
	modeFlag := flags.String("mode", "0700", "Permission bits of the directory, in octal.")
	interval := flags.Duration("interval", time.Minute, "How often to check the directory again (it may be recreated by the kubelet after a reboot); 0 prepares it once and then only waits.")
	once := flags.Bool("once", false, "Prepare the directory and exit instead of waiting for a signal.")
	kubeletDir := flags.String("kubelet-dir", "", "The kubelet's root directory, mounted at the same path (normally /var/lib/kubelet). When set, also serve the CSI driver that gives --dir to the injected sidecars as an ephemeral inline volume, and register it with the kubelet.")
	driverName := flags.String("driver-name", csidriver.DefaultName, "Name of the CSI driver (the CSIDriver object's name).")
	nodeName := flags.String("node-name", os.Getenv("KALPC_NODE_NAME"), "This node's name (for the CSI driver). Defaults to $KALPC_NODE_NAME.")
	sidecarImages := flags.String("sidecar-image", "", "Comma-separated sidecar images whose containers may mount the node directory through the CSI driver (the operator's --sidecar-image). Required with --kubelet-dir.")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", flags.Args())
	}
	mode, err := strconv.ParseUint(*modeFlag, 8, 32)
	if err != nil {
		return fmt.Errorf("--mode: %q is not an octal mode: %w", *modeFlag, err)
	}
	if *interval < 0 {
		return fmt.Errorf("--interval must not be negative, not %s", *interval)
	}
	spec := nodeprep.Spec{Path: *dir, UID: *uid, GID: *gid, Mode: fsMode(mode)}
	if err := spec.Validate(); err != nil {
		return err
	}
	var images []string
	for im := range strings.SplitSeq(*sidecarImages, ",") {
		if im = strings.TrimSpace(im); im != "" {
			images = append(images, im)
		}
	}
	if *kubeletDir != "" {
		if *nodeName == "" {
			return errors.New("--node-name (or $KALPC_NODE_NAME) is required with --kubelet-dir")
		}
		if len(images) == 0 {
			return errors.New("--sidecar-image is required with --kubelet-dir")
		}
		if *once {
			return errors.New("--once and --kubelet-dir exclude each other: the CSI driver serves until stopped")
		}
	}

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	prepare := func() error {
		res, err := nodeprep.Prepare(spec)
		if err != nil {
			return err
		}
		if res.Chowned || res.Chmodded {
			log.Info("Prepared the node directory", "dir", spec.Path, "uid", spec.UID, "gid", spec.GID, "mode", fmt.Sprintf("%#o", mode), "chowned", res.Chowned, "chmodded", res.Chmodded)
		}
		return nil
	}
	if err := prepare(); err != nil {
		return err
	}
	log.Info("The node directory is ready", "dir", spec.Path)
	if *once {
		return nil
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var driverDone <-chan error
	if *kubeletDir != "" {
		errc := make(chan error, 1)
		driverDone = errc
		if err := startDriver(ctx, log, errc, csidriver.Config{
			Name: *driverName, NodeID: *nodeName, NodeDir: *dir, KubeletDir: *kubeletDir, Log: log,
		}, images); err != nil {
			return err
		}
	}
	var tick <-chan time.Time
	if *interval > 0 {
		t := time.NewTicker(*interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("Stopping")
			if driverDone != nil {
				return <-driverDone
			}
			return nil
		case err := <-driverDone:
			return err
		case <-tick:
			// A failed check is logged, not fatal: a restart would not fix
			// it, and the sidecars' readiness shows the problem.
			if err := prepare(); err != nil {
				log.Error("Failed to prepare the node directory", "dir", spec.Path, "error", err)
			}
		}
	}
}

// startDriver starts the CSI driver for cfg, checking pods with the API
// server (in-cluster credentials), and sends Serve's result to errc.
func startDriver(ctx context.Context, log *slog.Logger, errc chan<- error, cfg csidriver.Config, images []string) error {
	rc, err := rest.InClusterConfig()
	if err != nil {
		return fmt.Errorf("the CSI driver reads pods from the API server: %w", err)
	}
	rc.UserAgent = "kalpc-nodeprep"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("failed to create the API client: %w", err)
	}
	cfg.Checker = &csidriver.APIPodChecker{Pods: cs.CoreV1(), Driver: cfg.Name, NodeName: cfg.NodeID, SidecarImages: images}
	d, err := csidriver.New(cfg)
	if err != nil {
		return err
	}
	// What a previous run published is in the mount table; nothing else
	// needs recovering.
	published, err := d.Published()
	if err != nil {
		return err
	}
	log.Info("Recovered the published volumes from the mount table", "count", len(published), "targets", published)
	go func() { errc <- csidriver.Serve(ctx, d, csidriver.SocketsFor(cfg.KubeletDir, cfg.Name)) }()
	return nil
}

// fsMode converts octal permission bits to an fs.FileMode.
func fsMode(m uint64) fs.FileMode { return fs.FileMode(m) }
