package bench

import (
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// NetnsMode says whether a run places its processes in network namespaces.
type NetnsMode string

const (
	// NetnsAuto uses two network namespaces when the harness runs as root
	// with iproute2, and falls back to the current namespace (loopback) with
	// a notice otherwise.
	NetnsAuto NetnsMode = "auto"
	// NetnsOn requires network namespaces and fails without them.
	NetnsOn NetnsMode = "on"
	// NetnsOff runs every process in the current network namespace.
	NetnsOff NetnsMode = "off"
)

// Reply modes.
const (
	// ReplyAck answers every request with AckSize bytes: a round trip moves
	// the payload one way, as an RPC that uploads data does.
	ReplyAck = "ack"
	// ReplyEcho answers with the request's own bytes.
	ReplyEcho = "echo"
	// AckSize is the reply size in ReplyAck mode.
	AckSize = 64
)

// Options configure a run. The zero value is a full run with defaults.
type Options struct {
	// Sizes are the request payload sizes in bytes. Defaults to
	// DefaultSizes (64 B to 64 MiB).
	Sizes []int
	// Transports names the transports to measure, in report order.
	// Defaults to every registered transport.
	Transports []string
	// Rounds is how many times every cell is measured, one sweep of all
	// cells after another; each cell reports its median round. Defaults to
	// 1.
	Rounds int
	// Reply is ReplyAck or ReplyEcho. Defaults to ReplyAck.
	Reply string
	// Warmup is the most warm-up round trips per cell (at least one is
	// always made). Defaults to 100.
	Warmup int
	// WarmupTime bounds the warm-up of a cell. Defaults to 500ms.
	WarmupTime time.Duration
	// Iterations is the most measured round trips per cell. Defaults to
	// 100000.
	Iterations int
	// MinIterations is the fewest measured round trips per cell, even past
	// CellTime. Defaults to 5.
	MinIterations int
	// CellTime bounds the measured phase of a cell (after MinIterations).
	// Defaults to 2s.
	CellTime time.Duration
	// OpTimeout is how long one round trip (or a child's start-up) may take
	// before the cell is killed and reported as failed. Defaults to 60s.
	OpTimeout time.Duration
	// Netns chooses where processes run. Defaults to NetnsAuto.
	Netns NetnsMode
	// CPUProfileDir, if set, receives a pprof CPU profile of each child
	// process's measured phase, named <transport>_<size>_<role>.pprof.
	CPUProfileDir string
	// Executable is the binary re-executed as the server and client
	// processes; it must call ChildMain when IsChild. Defaults to the
	// running binary.
	Executable string
	// Command is recorded in the report as the command line that made it.
	// Defaults to the process's arguments.
	Command string
	// Log receives progress lines. Defaults to io.Discard.
	Log io.Writer
}

// QuickOptions are options for a short run (CI, smoke tests): sizes up to
// 1 MiB and about a fifth of a second per cell.
func QuickOptions() Options {
	return Options{
		Sizes:         slices.Clone(QuickSizes),
		Warmup:        20,
		WarmupTime:    100 * time.Millisecond,
		Iterations:    2000,
		MinIterations: 3,
		CellTime:      200 * time.Millisecond,
	}
}

func (o Options) withDefaults() (Options, error) {
	if len(o.Sizes) == 0 {
		o.Sizes = slices.Clone(DefaultSizes)
	}
	if len(o.Transports) == 0 {
		for _, t := range registry {
			o.Transports = append(o.Transports, t.Info().Name)
		}
	}
	if o.Rounds == 0 {
		o.Rounds = 1
	}
	if o.Reply == "" {
		o.Reply = ReplyAck
	}
	if o.Warmup == 0 {
		o.Warmup = 100
	}
	if o.WarmupTime == 0 {
		o.WarmupTime = 500 * time.Millisecond
	}
	if o.Iterations == 0 {
		o.Iterations = 100000
	}
	if o.MinIterations == 0 {
		o.MinIterations = 5
	}
	if o.CellTime == 0 {
		o.CellTime = 2 * time.Second
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = 60 * time.Second
	}
	if o.Netns == "" {
		o.Netns = NetnsAuto
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Command == "" {
		o.Command = shellJoin(os.Args)
	}
	if o.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("failed to find the running binary: %w", err)
		}
		o.Executable = exe
	}
	for _, s := range o.Sizes {
		if s <= 0 || s > maxSize {
			return o, fmt.Errorf("size %d outside [1, %d]", s, maxSize)
		}
	}
	for _, name := range o.Transports {
		if _, ok := lookup(name); !ok {
			return o, fmt.Errorf("unknown transport %q (known: %v)", name, transportNames())
		}
	}
	switch {
	case o.Reply != ReplyAck && o.Reply != ReplyEcho:
		return o, fmt.Errorf("reply mode %q: want %q or %q", o.Reply, ReplyAck, ReplyEcho)
	case o.Netns != NetnsAuto && o.Netns != NetnsOn && o.Netns != NetnsOff:
		return o, fmt.Errorf("netns mode %q: want auto, on or off", o.Netns)
	case o.Rounds < 1 || o.Rounds > 100:
		return o, fmt.Errorf("rounds %d outside [1, 100]", o.Rounds)
	case o.Warmup < 0 || o.Iterations < 1 || o.MinIterations < 1 || o.MinIterations > o.Iterations:
		return o, fmt.Errorf("iterations: want warmup >= 0 and 1 <= min-iterations (%d) <= iterations (%d)", o.MinIterations, o.Iterations)
	case o.WarmupTime < 0 || o.CellTime <= 0 || o.OpTimeout <= 0:
		return o, fmt.Errorf("durations: want warmup-time >= 0, cell-time > 0 and op-timeout > 0")
	}
	return o, nil
}

func (o *Options) replySize(size int) int {
	if o.Reply == ReplyEcho {
		return size
	}
	return AckSize
}

func transportNames() []string {
	var out []string
	for _, t := range registry {
		out = append(out, t.Info().Name)
	}
	return out
}
