package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The harness re-executes the test binary as its server and client
// processes.
func TestMain(m *testing.M) {
	if IsChild(os.Args) {
		os.Exit(ChildMain(os.Args))
	}
	os.Exit(m.Run())
}

// alpcMinInline is the size up to which kalpc-section is unavailable.
const alpcMinInline = 256

// tinyOptions keep an end-to-end run to a few seconds, even with -race.
func tinyOptions(t *testing.T, mode NetnsMode) Options {
	return Options{
		Sizes:         []int{64, 4 << 10},
		Warmup:        3,
		WarmupTime:    20 * time.Millisecond,
		Iterations:    50,
		MinIterations: 2,
		CellTime:      50 * time.Millisecond,
		OpTimeout:     20 * time.Second,
		Netns:         mode,
		Command:       "go test " + t.Name(),
		Log:           testLog{t},
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func requireNetns(t *testing.T) {
	t.Helper()
	if err := canUseNetns(); err != nil {
		if os.Getenv("CI") != "" && os.Geteuid() == 0 {
			t.Fatalf("CI runs as root and must exercise network namespaces: %v", err)
		}
		t.Skipf("network namespaces unavailable: %v", err)
	}
}

func TestRunEndToEnd(t *testing.T) {
	tests := []struct {
		name     string
		mode     NetnsMode
		wantMode string
		// wantOK must measure; wantUnavailable must be reported unavailable.
		wantOK, wantUnavailable []string
	}{
		{
			name:            "netns",
			mode:            NetnsOn,
			wantMode:        ModeNetns,
			wantOK:          []string{"copy", "raw-seqpacket", "kalpc-call", "kalpc-inline", "kalpc-loan", "grpc-tcp-veth", "grpc-tcp-loopback", "grpc-unix", "grpc-kalpc-compat", "grpc-kalpc-native"},
			wantUnavailable: []string{"kalpc-section"}, // 64 B only; 4 KiB goes through a section
		},
		{
			name:            "loopback",
			mode:            NetnsOff,
			wantMode:        ModeLoopback,
			wantOK:          []string{"copy", "raw-seqpacket", "kalpc-call", "kalpc-inline", "kalpc-loan", "grpc-tcp-loopback", "grpc-unix", "grpc-kalpc-compat", "grpc-kalpc-native"},
			wantUnavailable: []string{"grpc-tcp-veth", "kalpc-section"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.mode == NetnsOn {
				requireNetns(t)
			}
			tmpBefore := sharedDirs(t)
			rep, err := Run(t.Context(), tinyOptions(t, tt.mode))
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			checkCleanedUp(t, rep, tmpBefore)
			if rep.Mode != tt.wantMode {
				t.Errorf("mode %q, want %q (notice %q)", rep.Mode, tt.wantMode, rep.Notice)
			}
			if (rep.Notice != "") != (tt.mode == NetnsOff) {
				t.Errorf("notice %q in mode %s", rep.Notice, tt.mode)
			}
			for _, size := range []int{64, 4 << 10} {
				for _, name := range tt.wantOK {
					r, ok := rep.result(name, size)
					if !ok {
						t.Errorf("%s at %d B: status %q (%s), want ok", name, size, r.Status, r.Note)
						continue
					}
					if r.Ops < 2 || r.RTT.P50NS <= 0 || r.RTT.P99NS < r.RTT.P50NS || r.ThroughputBytesPerSecond <= 0 ||
						r.CPUPerOp.TotalNS <= 0 || r.PeakRSS.ClientBytes <= 0 || (name != "copy") != (r.PeakRSS.ServerBytes > 0) {
						t.Errorf("%s at %d B: implausible figures %+v rtt %+v cpu %+v rss %+v", name, size, r, *r.RTT, *r.CPUPerOp, *r.PeakRSS)
					}
				}
				for _, name := range tt.wantUnavailable {
					if name == "kalpc-section" && size > alpcMinInline {
						continue
					}
					if r, _ := rep.result(name, size); r.Status != StatusUnavailable || r.Note == "" {
						t.Errorf("%s at %d B: status %q note %q, want unavailable with a reason", name, size, r.Status, r.Note)
					}
				}
			}
			checkSchema(t, rep)
			checkOutputs(t, rep)
		})
	}
}

// TestRunInterrupted cancels a run in the middle of a cell: Run must return
// promptly and leave nothing behind.
func TestRunInterrupted(t *testing.T) {
	mode := NetnsOff
	if canUseNetns() == nil {
		mode = NetnsOn
	}
	opts := tinyOptions(t, mode)
	opts.Transports = []string{"raw-seqpacket", "kalpc-inline"}
	opts.CellTime = time.Minute
	opts.Iterations = 1 << 30
	tmpBefore := sharedDirs(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	rep, err := Run(ctx, opts)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: %v, want the context's error", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("Run took %v after the interrupt", d)
	}
	checkCleanedUp(t, rep, tmpBefore)
}

// checkCleanedUp fails if the run left a namespace, interface, process or
// shared directory behind.
func checkCleanedUp(t *testing.T, rep *Report, tmpBefore []string) {
	t.Helper()
	if left := leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if len(rep.pids) == 0 {
		t.Errorf("no child processes were recorded")
	}
	for _, pid := range rep.pids {
		if processAlive(pid) {
			t.Errorf("child process %d still alive", pid)
		}
	}
	for _, d := range sharedDirs(t) {
		if !slices.Contains(tmpBefore, d) {
			t.Errorf("shared directory %s left behind", d)
		}
	}
}

func sharedDirs(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, parent := range sharedDirParents() {
		m, err := filepath.Glob(filepath.Join(parent, fmt.Sprintf("%s%d-*", sharedDirPrefix, os.Getpid())))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m...)
	}
	return out
}

// checkSchema checks the JSON report has every documented field
// (docs/performance.md), so that a rename is a deliberate schema change.
func checkSchema(t *testing.T, rep *Report) {
	t.Helper()
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	requireKeys(t, "report", doc, "schema", "command", "started", "duration_seconds", "machine", "mode", "settings", "transports", "results", "ratios")
	if doc["schema"] != SchemaVersion {
		t.Errorf("schema %v, want %s", doc["schema"], SchemaVersion)
	}
	requireKeys(t, "machine", doc["machine"], "cpu_model", "cores", "kernel", "memory_bytes", "go_version", "arch")
	requireKeys(t, "settings", doc["settings"], "sizes_bytes", "reply", "warmup", "warmup_time_seconds", "iterations", "min_iterations", "cell_time_seconds", "op_timeout_seconds")
	for _, tr := range doc["transports"].([]any) {
		requireKeys(t, "transport", tr, "name", "label", "path", "placement")
	}
	for _, r := range doc["results"].([]any) {
		res := r.(map[string]any)
		requireKeys(t, "result", res, "transport", "size_bytes", "status", "warmup_ops", "ops", "elapsed_seconds", "throughput_bytes_per_second")
		switch res["status"] {
		case StatusOK:
			requireKeys(t, "result.rtt", res["rtt"], "p50_ns", "p99_ns", "mean_ns", "min_ns", "max_ns", "stddev_ns")
			requireKeys(t, "result.cpu_per_op", res["cpu_per_op"], "client_ns", "server_ns", "total_ns")
			requireKeys(t, "result.peak_rss", res["peak_rss"], "client_bytes", "server_bytes")
		case StatusUnavailable, StatusFailed:
			requireKeys(t, "result", res, "note")
		default:
			t.Errorf("result status %v", res["status"])
		}
	}
	ids := map[string]bool{}
	for _, r := range doc["ratios"].([]any) {
		requireKeys(t, "ratio", r, "id", "description", "value", "met")
		ids[r.(map[string]any)["id"].(string)] = true
	}
	for _, id := range []string{"kalpc-64b-p50-vs-raw-seqpacket", "grpc-veth-64b-p50-vs-kalpc", "kalpc-16mib-throughput-vs-grpc-veth", "kalpc-16mib-throughput-vs-copy", "kalpc-loan-16mib-vs-64b-p50"} {
		if !ids[id] {
			t.Errorf("goal %s missing from ratios", id)
		}
	}
}

func requireKeys(t *testing.T, what string, v any, keys ...string) {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Errorf("%s: %T, want an object", what, v)
		return
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%s: missing field %q", what, k)
		}
	}
}

// checkOutputs renders the markdown, the plot and a document update.
func checkOutputs(t *testing.T, rep *Report) {
	t.Helper()
	dir := t.TempDir()
	md := rep.Markdown("rtt.png")
	for _, want := range []string{"| transport | size | p50 |", "kalpc inline (Call)", "### Ratios", "### Not measured", "gRPC over kalpc (native)"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	for _, ext := range []string{"png", "svg"} {
		p := filepath.Join(dir, "rtt."+ext)
		if err := rep.SavePlot(p); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() < 1000 {
			t.Errorf("plot %s: %v", p, err)
		}
	}
	doc := filepath.Join(dir, "performance.md")
	if err := os.WriteFile(doc, []byte("# Perf\n\nintro\n\n"+DocBeginMarker+"\nold\n"+DocEndMarker+"\n\nexplanations\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := rep.UpdateDoc(doc, "rtt.png"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(doc)
	if s := string(b); strings.Contains(s, "\nold\n") || !strings.HasPrefix(s, "# Perf\n\nintro\n\n") || !strings.HasSuffix(s, DocEndMarker+"\n\nexplanations\n") || !strings.Contains(s, "### Results") {
		t.Errorf("updated document:\n%s", s)
	}
}
