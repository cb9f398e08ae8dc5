// Command kalpc-bench measures kalpc against a raw SOCK_SEQPACKET
// ping-pong, an in-process copy and gRPC (TCP across a veth pair, TCP
// loopback, Unix socket), in one run, and writes a markdown table, a JSON
// report and a log-log plot of round-trip time against payload size.
//
// As root it runs the server and client of each cell in two network
// namespaces joined by a veth pair, like two pods on one node; otherwise it
// falls back to loopback with a notice. It removes every namespace and
// process it created, also on SIGINT and SIGTERM.
//
// Usage:
//
//	kalpc-bench [flags]
//
// Flags:
//
//	-sizes LIST          request payload sizes, e.g. 64,4KiB,1MiB (default 64B to 64MiB; -quick: up to 1MiB)
//	-transports LIST     transports to measure, in order (default all; see -list)
//	-list                print the transports and exit
//	-quick               short run for CI: sizes up to 1 MiB, 0.2 s per cell
//	-rounds N            sweep all cells N times and report each cell's median round (default 1)
//	-reply ack|echo      reply with 64 B (default) or with the request's bytes
//	-warmup N            most warm-up round trips per cell (default 100)
//	-warmup-time D       warm-up time bound per cell (default 500ms)
//	-iterations N        most measured round trips per cell (default 100000)
//	-min-iterations N    fewest measured round trips per cell (default 5)
//	-cell-time D         measured-phase time bound per cell (default 2s)
//	-op-timeout D        a round trip slower than this fails the cell (default 60s)
//	-netns auto|on|off   network namespaces: if possible, required, or never (default auto)
//	-out DIR             where results.json, results.md and rtt.png go (default _out/bench)
//	-plot FORMAT         png or svg (default png)
//	-cpuprofile DIR      write a pprof CPU profile of each process's measured phase into DIR
//	-update-doc FILE     replace the generated section of FILE (docs/performance.md)
//	-q                   print only the final table, no progress
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kalpc/kalpc/internal/bench"
)

func main() {
	if bench.IsChild(os.Args) {
		os.Exit(bench.ChildMain(os.Args))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// Signals stay caught until run returns, so a second interrupt cannot
	// cut the cleanup short.
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		sizes      = fs.String("sizes", "", "comma-separated request payload sizes, e.g. 64,4KiB,60KiB,1MiB,16MiB,64MiB (default: those; with -quick: 64,4KiB,60KiB,1MiB)")
		transports = fs.String("transports", "", "comma-separated transports to measure, in report order (default: all; see -list)")
		list       = fs.Bool("list", false, "print the transports and exit")
		quick      = fs.Bool("quick", false, "short run for CI: sizes up to 1 MiB, about 0.2 s per cell")
		rounds     = fs.Int("rounds", 1, "measure every cell this many times, one sweep after another, and report each cell's median round")
		reply      = fs.String("reply", bench.ReplyAck, "reply with 64 B (ack) or with the request's bytes (echo)")
		warmup     = fs.Int("warmup", 0, "most warm-up round trips per cell (default 100; -quick 20)")
		warmupTime = fs.Duration("warmup-time", 0, "warm-up time bound per cell (default 500ms; -quick 100ms)")
		iterations = fs.Int("iterations", 0, "most measured round trips per cell (default 100000; -quick 2000)")
		minIter    = fs.Int("min-iterations", 0, "fewest measured round trips per cell, even past -cell-time (default 5; -quick 3)")
		cellTime   = fs.Duration("cell-time", 0, "measured-phase time bound per cell (default 2s; -quick 200ms)")
		opTimeout  = fs.Duration("op-timeout", 0, "a round trip or child start-up slower than this fails the cell (default 60s)")
		netns      = fs.String("netns", string(bench.NetnsAuto), "run server and client in two network namespaces: auto (if root), on (required) or off")
		out        = fs.String("out", "_out/bench", "directory for results.json, results.md and the plot")
		plotFormat = fs.String("plot", "png", "plot format: png or svg")
		cpuprofile = fs.String("cpuprofile", "", "directory for pprof CPU profiles of each process's measured phase (<transport>_<size>_<role>.pprof)")
		updateDoc  = fs.String("update-doc", "", "markdown file whose generated section (between the kalpc-bench markers) is replaced with the results")
		quiet      = fs.Bool("q", false, "print no progress, only the results")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n\nMeasures kalpc against raw SOCK_SEQPACKET, an in-process copy and gRPC.\n\nFlags:\n", filepath.Base(args[0]))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kalpc-bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *list {
		for _, t := range bench.Transports() {
			fmt.Fprintf(stdout, "%-20s %s\n%-20s   %s (%s)\n", t.Info().Name, t.Info().Label, "", t.Info().Path, t.Info().Placement)
		}
		return 0
	}
	if *plotFormat != "png" && *plotFormat != "svg" {
		fmt.Fprintf(stderr, "kalpc-bench: -plot %q: want png or svg\n", *plotFormat)
		return 2
	}

	var opts bench.Options
	if *quick {
		opts = bench.QuickOptions()
	}
	if *sizes != "" {
		s, err := bench.ParseSizes(*sizes)
		if err != nil {
			fmt.Fprintf(stderr, "kalpc-bench: -sizes: %v\n", err)
			return 2
		}
		opts.Sizes = s
	}
	if *transports != "" {
		for t := range strings.SplitSeq(*transports, ",") {
			if t = strings.TrimSpace(t); t != "" {
				opts.Transports = append(opts.Transports, t)
			}
		}
	}
	setInt(&opts.Warmup, *warmup)
	setInt(&opts.Iterations, *iterations)
	setInt(&opts.MinIterations, *minIter)
	setDuration(&opts.WarmupTime, *warmupTime)
	setDuration(&opts.CellTime, *cellTime)
	setDuration(&opts.OpTimeout, *opTimeout)
	opts.Rounds = *rounds
	opts.Reply = *reply
	opts.Netns = bench.NetnsMode(*netns)
	opts.CPUProfileDir = *cpuprofile
	opts.Command = commandLine(args)
	if !*quiet {
		opts.Log = stderr
	}

	rep, runErr := bench.Run(ctx, opts)
	if rep == nil {
		fmt.Fprintf(stderr, "kalpc-bench: %v\n", runErr)
		return 1
	}
	if ctx.Err() != nil {
		fmt.Fprintf(stderr, "kalpc-bench: interrupted; cleaned up, no results written\n")
		return 130
	}
	if err := write(rep, *out, *plotFormat, *updateDoc, stdout); err != nil {
		fmt.Fprintf(stderr, "kalpc-bench: %v\n", err)
		return 1
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "kalpc-bench: %v\n", runErr)
		return 1
	}
	return 0
}

// write saves the report's JSON, markdown and plot into dir, prints the
// markdown and, if doc is set, updates the document's generated section.
func write(rep *bench.Report, dir, plotFormat, doc string, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	plotPath := filepath.Join(dir, "rtt."+plotFormat)
	if err := rep.SavePlot(plotPath); err != nil {
		return err
	}
	md := rep.Markdown("rtt." + plotFormat)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte("# kalpc-bench results\n\n"+md), 0o644); err != nil {
		return err
	}
	if doc != "" {
		rel, err := relPath(filepath.Dir(doc), plotPath)
		if err != nil {
			return err
		}
		if err := rep.UpdateDoc(doc, rel); err != nil {
			return err
		}
	}
	_, err = fmt.Fprint(stdout, md)
	return err
}

func relPath(base, target string) (string, error) {
	ab, err := filepath.Abs(base)
	if err != nil {
		return "", err
	}
	at, err := filepath.Abs(target)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(ab, at)
	return filepath.ToSlash(rel), err
}

// commandLine is how the report names the command: the binary's base name
// and its flags (a `go run` temporary path says nothing).
func commandLine(args []string) string {
	parts := append([]string{"kalpc-bench"}, args[1:]...)
	return strings.Join(parts, " ")
}

func setInt(dst *int, v int) {
	if v != 0 {
		*dst = v
	}
}

func setDuration(dst *time.Duration, v time.Duration) {
	if v != 0 {
		*dst = v
	}
}
