package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// The control channel: the harness starts each child with a childSpec as
// its argument, then talks to it over the child's stdin (commands) and
// stdout (events), one JSON object per line. The harness closing the
// child's stdin tells it to exit.
//
// Server:  -> ready{addr}          <- start     -> usage     <- stop  -> usage
// Client:  -> warm                 <- measure   -> result
// Either may answer with unavailable{reason} or error{error} instead.

// ChildCommand is the hidden subcommand with which the harness re-executes
// its own binary as a server or client process.
const ChildCommand = "__kalpc-bench-child"

// Roles of child processes.
const (
	roleServer = "server"
	roleClient = "client"
)

// childSpec is everything a child needs, passed as its only argument.
type childSpec struct {
	Role string `json:"role"`
	Cell Cell   `json:"cell"`
	// Addr is the server's address (client only).
	Addr string `json:"addr,omitempty"`

	Warmup         int           `json:"warmup"`
	WarmupTime     time.Duration `json:"warmup_time"`
	Iterations     int           `json:"iterations"`
	MinIterations  int           `json:"min_iterations"`
	CellTime       time.Duration `json:"cell_time"`
	OpTimeout      time.Duration `json:"op_timeout"`
	CPUProfilePath string        `json:"cpu_profile_path,omitempty"`
}

// Commands the harness sends.
const (
	cmdStart   = "start"   // server: snapshot usage, start profiling
	cmdStop    = "stop"    // server: stop profiling, snapshot usage
	cmdMeasure = "measure" // client: run the measured iterations
)

type command struct {
	Cmd string `json:"cmd"`
}

// Events children send.
const (
	evReady       = "ready"
	evWarm        = "warm"
	evUsage       = "usage"
	evResult      = "result"
	evUnavailable = "unavailable"
	evError       = "error"
)

type event struct {
	Event  string `json:"event"`
	Addr   string `json:"addr,omitempty"`
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
	Usage  *Usage `json:"usage,omitempty"`
	// Result fields (client).
	Ops       int           `json:"ops,omitempty"`
	Elapsed   time.Duration `json:"elapsed,omitempty"`
	Latency   *Latency      `json:"latency,omitempty"`
	CPUDelta  time.Duration `json:"cpu_delta,omitempty"`
	WarmupOps int           `json:"warmup_ops,omitempty"`
}

// writeLine encodes v as one JSON line.
func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// readCommands decodes commands from r until EOF, then closes the channel.
func readCommands(r io.Reader) <-chan command {
	ch := make(chan command)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var c command
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				c.Cmd = fmt.Sprintf("invalid command %q", sc.Text())
			}
			ch <- c
		}
	}()
	return ch
}
