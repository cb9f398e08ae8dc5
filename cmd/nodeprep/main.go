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
	"syscall"
	"time"

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
			return nil
		case <-tick:
			// A failed check is logged, not fatal: a restart would not fix
			// it, and the sidecars' readiness shows the problem.
			if err := prepare(); err != nil {
				log.Error("Failed to prepare the node directory", "dir", spec.Path, "error", err)
			}
		}
	}
}

// fsMode converts octal permission bits to an fs.FileMode.
func fsMode(m uint64) fs.FileMode { return fs.FileMode(m) }
