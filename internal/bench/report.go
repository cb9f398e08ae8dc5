package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// SchemaVersion identifies the JSON report's schema (docs/performance.md
// documents it). Fields are only ever added within a version.
const SchemaVersion = "kalpc-bench/v1"

// Modes of a run.
const (
	// ModeNetns: server and client in two network namespaces joined by a
	// veth pair.
	ModeNetns = "netns"
	// ModeLoopback: every process in the harness's network namespace.
	ModeLoopback = "loopback"
)

// Statuses of a cell.
const (
	StatusOK          = "ok"
	StatusUnavailable = "unavailable"
	StatusFailed      = "failed"
)

// Report is the result of a run, written as JSON.
type Report struct {
	// Schema is SchemaVersion.
	Schema string `json:"schema"`
	// Command is the command line that made the report.
	Command string `json:"command"`
	// Started is when the run began (UTC).
	Started time.Time `json:"started"`
	// DurationSeconds is the run's wall-clock time.
	DurationSeconds float64 `json:"duration_seconds"`
	// Machine describes the host.
	Machine Machine `json:"machine"`
	// Mode is ModeNetns or ModeLoopback.
	Mode string `json:"mode"`
	// Notice explains a fallback to loopback; empty otherwise.
	Notice string `json:"notice,omitempty"`
	// Settings are the run's parameters.
	Settings Settings `json:"settings"`
	// Transports describes each measured transport, in report order.
	Transports []Info `json:"transports"`
	// Results has one entry per transport and size, in report order.
	Results []Result `json:"results"`
	// Ratios compares transports; those with a Goal are the project's
	// performance goals.
	Ratios []Ratio `json:"ratios"`

	pids []int // child processes started (for tests)
}

// Settings are a run's parameters.
type Settings struct {
	SizesBytes        []int   `json:"sizes_bytes"`
	Rounds            int     `json:"rounds"`
	Reply             string  `json:"reply"`
	Warmup            int     `json:"warmup"`
	WarmupTimeSeconds float64 `json:"warmup_time_seconds"`
	Iterations        int     `json:"iterations"`
	MinIterations     int     `json:"min_iterations"`
	CellTimeSeconds   float64 `json:"cell_time_seconds"`
	OpTimeoutSeconds  float64 `json:"op_timeout_seconds"`
}

func newSettings(o *Options) Settings {
	return Settings{
		SizesBytes:        o.Sizes,
		Rounds:            o.Rounds,
		Reply:             o.Reply,
		Warmup:            o.Warmup,
		WarmupTimeSeconds: o.WarmupTime.Seconds(),
		Iterations:        o.Iterations,
		MinIterations:     o.MinIterations,
		CellTimeSeconds:   o.CellTime.Seconds(),
		OpTimeoutSeconds:  o.OpTimeout.Seconds(),
	}
}

// Result is one cell: a transport at a size.
type Result struct {
	// Transport is the transport's Info.Name.
	Transport string `json:"transport"`
	// Size is the request payload in bytes.
	Size int `json:"size_bytes"`
	// Status is StatusOK, StatusUnavailable or StatusFailed.
	Status string `json:"status"`
	// Note says why a cell is unavailable or failed.
	Note string `json:"note,omitempty"`
	// WarmupOps is the number of warm-up round trips.
	WarmupOps int `json:"warmup_ops"`
	// Ops is the number of measured round trips.
	Ops int `json:"ops"`
	// ElapsedSeconds is the measured phase's wall-clock time.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// RTT summarises the measured round trips of the median round (status
	// ok only).
	RTT *Latency `json:"rtt,omitempty"`
	// RoundsP50NS is the p50 of every round, in the order they ran (status
	// ok only); RTT and the other figures come from the median one.
	RoundsP50NS []int64 `json:"rounds_p50_ns,omitempty"`
	// ThroughputBytesPerSecond is request payload bytes delivered per
	// second: Size × Ops / ElapsedSeconds.
	ThroughputBytesPerSecond float64 `json:"throughput_bytes_per_second"`
	// CPUPerOp is CPU time (user + system) per round trip.
	CPUPerOp *CPUPerOp `json:"cpu_per_op,omitempty"`
	// PeakRSS is each process's peak resident set size.
	PeakRSS *PeakRSS `json:"peak_rss,omitempty"`
}

// CPUPerOp is CPU time per round trip during the measured phase, from
// getrusage(2) of each process.
type CPUPerOp struct {
	ClientNS int64 `json:"client_ns"`
	ServerNS int64 `json:"server_ns"`
	TotalNS  int64 `json:"total_ns"`
}

// PeakRSS is the peak resident set size of each process of a cell (zero for
// a cell without a server process).
type PeakRSS struct {
	ClientBytes int64 `json:"client_bytes"`
	ServerBytes int64 `json:"server_bytes"`
}

func (r Result) unavailable(err error) Result {
	r.Status = StatusUnavailable
	r.Note, _ = isUnavailable(err)
	return r
}

func (r Result) failed(err error) Result {
	r.Status = StatusFailed
	r.Note = err.Error()
	return r
}

// failedOr reports err as unavailable if it says so, as failed otherwise.
func (r Result) failedOr(err error) Result {
	if _, ok := isUnavailable(err); ok {
		return r.unavailable(err)
	}
	if errors.Is(err, context.Canceled) {
		return r.failed(errors.New("interrupted"))
	}
	return r.failed(err)
}

func (r Result) measured(ev event, before, after Usage, hasServer bool) Result {
	if ev.Ops <= 0 || ev.Latency == nil || ev.Usage == nil {
		return r.failed(fmt.Errorf("client reported an empty result"))
	}
	r.Status = StatusOK
	r.Ops = ev.Ops
	r.ElapsedSeconds = ev.Elapsed.Seconds()
	r.RTT = ev.Latency
	if ev.Elapsed > 0 {
		r.ThroughputBytesPerSecond = float64(r.Size) * float64(ev.Ops) / ev.Elapsed.Seconds()
	}
	cpu := &CPUPerOp{ClientNS: int64(ev.CPUDelta) / int64(ev.Ops)}
	rss := &PeakRSS{ClientBytes: ev.Usage.MaxRSSBytes}
	if hasServer {
		cpu.ServerNS = int64(after.CPU()-before.CPU()) / int64(ev.Ops)
		rss.ServerBytes = after.MaxRSSBytes
	}
	cpu.TotalNS = cpu.ClientNS + cpu.ServerNS
	r.CPUPerOp, r.PeakRSS = cpu, rss
	return r
}

// summary is the one-line progress message for a cell.
func (r Result) summary() string {
	head := fmt.Sprintf("%-18s %8s", r.Transport, FormatSize(int64(r.Size)))
	switch r.Status {
	case StatusOK:
		return fmt.Sprintf("%s  p50 %-9s p99 %-9s %s  cpu/op %s", head, formatNS(r.RTT.P50NS), formatNS(r.RTT.P99NS), formatRate(r.ThroughputBytesPerSecond), formatNS(r.CPUPerOp.TotalNS))
	case StatusUnavailable:
		return head + "  not available: " + r.Note
	}
	return head + "  FAILED: " + r.Note
}

// result returns the cell of transport at size, if it ran.
func (rep *Report) result(transport string, size int) (Result, bool) {
	for _, r := range rep.Results {
		if r.Transport == transport && r.Size == size {
			return r, r.Status == StatusOK
		}
	}
	return Result{}, false
}

// shellJoin renders argv as a command line a shell would accept.
func shellJoin(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.IndexFunc(a, needsQuote) < 0 {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}

// needsQuote reports whether r makes a shell word need quoting.
func needsQuote(r rune) bool {
	safe := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=,:+@%", r)
	return !safe
}

// formatNS renders nanoseconds with three significant digits.
func formatNS(ns int64) string {
	d := float64(ns)
	switch {
	case d >= 1e9:
		return sig3(d/1e9) + " s"
	case d >= 1e6:
		return sig3(d/1e6) + " ms"
	case d >= 1e3:
		return sig3(d/1e3) + " µs"
	}
	return fmt.Sprintf("%d ns", ns)
}

// formatRate renders bytes per second in decimal units.
func formatRate(bps float64) string {
	switch {
	case bps >= 1e9:
		return sig3(bps/1e9) + " GB/s"
	case bps >= 1e6:
		return sig3(bps/1e6) + " MB/s"
	case bps >= 1e3:
		return sig3(bps/1e3) + " kB/s"
	}
	return fmt.Sprintf("%.0f B/s", bps)
}

// formatBytes renders a memory size in binary units.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return sig3(float64(n)/(1<<30)) + " GiB"
	case n >= 1<<20:
		return sig3(float64(n)/(1<<20)) + " MiB"
	case n >= 1<<10:
		return sig3(float64(n)/(1<<10)) + " KiB"
	}
	return fmt.Sprintf("%d B", n)
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}
