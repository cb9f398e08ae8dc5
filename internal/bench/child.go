package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"
)

// IsChild reports whether args (os.Args) invoke the hidden child
// subcommand. A binary that runs the harness must check it first thing in
// main (or TestMain) and hand over to ChildMain.
func IsChild(args []string) bool {
	return len(args) > 1 && args[1] == ChildCommand
}

// ChildMain runs a server or client process of the harness; args is os.Args.
// It returns the process's exit code.
func ChildMain(args []string) int {
	if !IsChild(args) || len(args) != 3 {
		fmt.Fprintf(os.Stderr, "usage: %s %s SPEC-JSON (started by the harness, not by hand)\n", args[0], ChildCommand)
		return 2
	}
	var spec childSpec
	if err := json.Unmarshal([]byte(args[2]), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "kalpc-bench child: bad spec: %v\n", err)
		return 2
	}
	// The harness ends children by closing stdin or killing them; an
	// interrupt aimed at the harness must not kill them first.
	signal.Ignore(syscall.SIGINT)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmds := readCommands(os.Stdin)
	var err error
	switch spec.Role {
	case roleServer:
		err = runServer(ctx, &spec, cmds, os.Stdout)
	case roleClient:
		err = runClient(ctx, &spec, cmds, os.Stdout)
	default:
		err = fmt.Errorf("unknown role %q", spec.Role)
	}
	if err != nil {
		if reason, ok := isUnavailable(err); ok {
			_ = writeLine(os.Stdout, event{Event: evUnavailable, Reason: reason})
			return 0
		}
		_ = writeLine(os.Stdout, event{Event: evError, Error: err.Error()})
		fmt.Fprintf(os.Stderr, "kalpc-bench %s (%s, %s): %v\n", spec.Role, spec.Cell.Transport, FormatSize(int64(spec.Cell.Size)), err)
		return 1
	}
	return 0
}

func runServer(ctx context.Context, spec *childSpec, cmds <-chan command, out io.Writer) error {
	t, ok := lookup(spec.Cell.Transport)
	if !ok {
		return fmt.Errorf("unknown transport %q", spec.Cell.Transport)
	}
	addr, err := t.Serve(ctx, spec.Cell)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := writeLine(out, event{Event: evReady, Addr: addr}); err != nil {
		return err
	}
	var prof *os.File
	for c := range cmds {
		switch c.Cmd {
		case cmdStart:
			if spec.CPUProfilePath != "" {
				if prof, err = startProfile(spec.CPUProfilePath); err != nil {
					return err
				}
			}
		case cmdStop:
			if prof != nil {
				if err := stopProfile(prof); err != nil {
					return err
				}
				prof = nil
			}
		default:
			return fmt.Errorf("server: unexpected command %q", c.Cmd)
		}
		u, err := Getrusage()
		if err != nil {
			return err
		}
		if err := writeLine(out, event{Event: evUsage, Usage: &u}); err != nil {
			return err
		}
	}
	if prof != nil {
		return stopProfile(prof)
	}
	return nil // stdin closed: the harness is done with us
}

func runClient(ctx context.Context, spec *childSpec, cmds <-chan command, out io.Writer) error {
	t, ok := lookup(spec.Cell.Transport)
	if !ok {
		return fmt.Errorf("unknown transport %q", spec.Cell.Transport)
	}
	dctx, cancel := context.WithTimeout(ctx, spec.OpTimeout)
	c, err := t.Dial(dctx, spec.Cell, spec.Addr)
	cancel()
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer func() { _ = c.Close() }()

	// Warm-up: at least one round trip, which also proves the path works.
	warm := 0
	deadline := time.Now().Add(spec.WarmupTime)
	for warm == 0 || (warm < spec.Warmup && time.Now().Before(deadline)) {
		if err := roundTrip(ctx, c); err != nil {
			return fmt.Errorf("warm-up round trip %d: %w", warm+1, err)
		}
		warm++
	}
	if err := writeLine(out, event{Event: evWarm, WarmupOps: warm}); err != nil {
		return err
	}
	cmd, ok := <-cmds
	if !ok {
		return nil
	}
	if cmd.Cmd != cmdMeasure {
		return fmt.Errorf("client: unexpected command %q", cmd.Cmd)
	}

	samples := make([]time.Duration, 0, spec.Iterations)
	var prof *os.File
	if spec.CPUProfilePath != "" {
		if prof, err = startProfile(spec.CPUProfilePath); err != nil {
			return err
		}
	}
	u0, err := Getrusage()
	if err != nil {
		return err
	}
	start := time.Now()
	for len(samples) < spec.Iterations && (len(samples) < spec.MinIterations || time.Since(start) < spec.CellTime) {
		t0 := time.Now()
		if err := roundTrip(ctx, c); err != nil {
			return fmt.Errorf("round trip %d: %w", len(samples)+1, err)
		}
		samples = append(samples, time.Since(t0))
	}
	elapsed := time.Since(start)
	u1, err := Getrusage()
	if err != nil {
		return err
	}
	if prof != nil {
		if err := stopProfile(prof); err != nil {
			return err
		}
	}
	lat := summarize(samples)
	u1.UserNS -= u0.UserNS
	u1.SystemNS -= u0.SystemNS
	return writeLine(out, event{
		Event:    evResult,
		Ops:      len(samples),
		Elapsed:  elapsed,
		Latency:  &lat,
		CPUDelta: u1.CPU(),
		Usage:    &u1,
	})
}

// roundTrip runs one operation. Its context carries no deadline, so that
// transports which pass deadlines to the peer (kalpc, gRPC) do not pay for
// one: the harness enforces the op timeout from outside by killing a cell
// whose children stop answering.
func roundTrip(ctx context.Context, c Client) error {
	return c.RoundTrip(ctx)
}

func startProfile(path string) (*os.File, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("failed to create CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("failed to start CPU profile: %w", err)
	}
	return f, nil
}

func stopProfile(f *os.File) error {
	pprof.StopCPUProfile()
	return f.Close()
}
