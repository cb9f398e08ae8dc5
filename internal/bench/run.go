package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Run measures every transport at every size and returns the report. Each
// cell runs in a fresh server process and a fresh client process (so peak
// RSS and CPU time belong to that cell alone); in netns mode they live in
// two network namespaces joined by a veth pair and share only a temporary
// directory. Run removes every namespace, interface, process and file it
// created before it returns, also when ctx is cancelled (the command cancels
// it on SIGINT and SIGTERM).
//
// Cells that cannot run are reported as "unavailable"; cells that fail are
// reported as "failed" and Run goes on, returning the report together with
// an error that counts them.
func Run(ctx context.Context, opts Options) (rep *Report, err error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &runner{opts: o}
	rep = &Report{
		Schema:   SchemaVersion,
		Command:  o.Command,
		Started:  time.Now().UTC().Truncate(time.Second),
		Machine:  readMachine(),
		Settings: newSettings(&o),
	}
	defer func() { rep.pids = r.pids }()

	if err := r.setup(ctx, rep); err != nil {
		return nil, err
	}
	defer func() {
		if cerr := r.cleanup(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if o.CPUProfileDir != "" {
		if err := os.MkdirAll(o.CPUProfileDir, 0o755); err != nil {
			return nil, fmt.Errorf("failed to create the profile directory: %w", err)
		}
	}

	start := time.Now()
	for _, name := range o.Transports {
		t, _ := lookup(name)
		rep.Transports = append(rep.Transports, t.Info())
	}
	// Rounds sweep every cell in turn, so that a noisy spell of the machine
	// hits all transports alike rather than one of them; each cell then
	// reports its median round.
	total := len(o.Transports) * len(o.Sizes)
	rounds := make([][]Result, total)
	for round := 1; round <= o.Rounds; round++ {
		i := 0
		for _, name := range o.Transports {
			t, _ := lookup(name)
			for _, size := range o.Sizes {
				i++
				if round > 1 && rounds[i-1][0].Status != StatusOK {
					continue // unavailable or failed: once is enough
				}
				if err := ctx.Err(); err != nil {
					return rep, err
				}
				res := r.runCell(ctx, t, size)
				if err := ctx.Err(); err != nil {
					return rep, err // a cell cut short by the interrupt is no result
				}
				rounds[i-1] = append(rounds[i-1], res)
				prefix := fmt.Sprintf("[%d/%d]", i, total)
				if o.Rounds > 1 {
					prefix = fmt.Sprintf("[round %d/%d, %d/%d]", round, o.Rounds, i, total)
				}
				r.logf("%s %s", prefix, res.summary())
			}
		}
	}
	failed := 0
	for _, rs := range rounds {
		res := medianRound(rs)
		if res.Status == StatusFailed {
			failed++
		}
		rep.Results = append(rep.Results, res)
	}
	rep.DurationSeconds = time.Since(start).Seconds()
	rep.Ratios = evaluateRatios(rep)
	if failed > 0 {
		return rep, fmt.Errorf("%d of %d cells failed (see the report's notes)", failed, total)
	}
	return rep, nil
}

// medianRound merges a cell's rounds: a failed round fails the cell;
// otherwise the cell reports the round with the median p50 (the lower
// middle one for an even count), plus every round's p50.
func medianRound(rs []Result) Result {
	for _, r := range rs {
		if r.Status != StatusOK {
			return r
		}
	}
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b Result) int { return cmp.Compare(a.RTT.P50NS, b.RTT.P50NS) })
	out := sorted[(len(sorted)-1)/2]
	for _, r := range rs {
		out.RoundsP50NS = append(out.RoundsP50NS, r.RTT.P50NS)
	}
	return out
}

type runner struct {
	opts Options
	env  Env
	ns   *netnsPair
	dir  string
	pids []int
	cell int
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.opts.Log, "kalpc-bench: "+format+"\n", args...)
}

// setup sweeps leftovers of killed runs, creates the namespaces (or decides
// on loopback) and the shared directory.
func (r *runner) setup(ctx context.Context, rep *Report) error {
	rep.Mode = ModeLoopback
	if removed, err := sweepStaleDirs(); err != nil {
		r.logf("warning: removing leftovers of earlier runs: %v", err)
	} else if len(removed) > 0 {
		r.logf("removed leftovers of killed runs: %s", strings.Join(removed, ", "))
	}
	if r.opts.Netns != NetnsOff {
		reason := canUseNetns()
		if reason == nil {
			if removed, err := sweepStale(); err != nil {
				r.logf("warning: removing leftovers of earlier runs: %v", err)
			} else if len(removed) > 0 {
				r.logf("removed leftovers of killed runs: %s", strings.Join(removed, ", "))
			}
			r.ns, reason = setupNetns(ctx)
		}
		switch {
		case reason == nil:
			rep.Mode = ModeNetns
			r.env = Env{Netns: true, ServerVethIP: ServerVethIP}
		case r.opts.Netns == NetnsOn:
			return fmt.Errorf("cannot create network namespaces: %w", reason)
		default:
			rep.Notice = fmt.Sprintf("network namespaces unavailable (%v): every process runs in the current network namespace, TCP goes over loopback and the veth rows are skipped", reason)
			r.logf("NOTICE: %s", rep.Notice)
		}
	} else {
		rep.Notice = "network namespaces disabled (-netns=off): every process runs in the current network namespace, TCP goes over loopback and the veth rows are skipped"
	}
	if rep.Mode == ModeNetns {
		r.logf("server in netns %s (%s), client in netns %s (%s), veth %s <-> %s", r.ns.Server, ServerVethIP, r.ns.Client, ClientVethIP, r.ns.VethServer, r.ns.VethClient)
	}
	dir, err := sharedDir()
	if err != nil {
		if r.ns != nil {
			_ = r.ns.Close()
		}
		return err
	}
	r.dir = dir
	return nil
}

// sharedDirPrefix starts the name of a run's shared directory, followed by
// the harness's pid (so a later run can remove it if the harness was killed).
const sharedDirPrefix = "kalpc-bench-"

// sharedDirParents are where shared directories may be: the temporary
// directory, unless its path is too long for sockaddr_un, then /tmp.
func sharedDirParents() []string {
	if p := os.TempDir(); len(p) <= 60 && p != "/tmp" {
		return []string{p, "/tmp"}
	}
	return []string{"/tmp"}
}

// sharedDir creates the directory the two sides share for Unix sockets,
// short enough for sockaddr_un.
func sharedDir() (string, error) {
	dir, err := os.MkdirTemp(sharedDirParents()[0], fmt.Sprintf("%s%d-", sharedDirPrefix, os.Getpid()))
	if err != nil {
		return "", fmt.Errorf("failed to create the shared directory: %w", err)
	}
	return dir, nil
}

// sweepStaleDirs removes shared directories of harnesses that no longer
// run.
func sweepStaleDirs() ([]string, error) {
	var removed []string
	var errs []error
	for _, parent := range sharedDirParents() {
		entries, err := os.ReadDir(parent)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			m := sharedDirRE.FindStringSubmatch(e.Name())
			if m == nil || !e.IsDir() || ownerAlive(m[1]) {
				continue
			}
			p := filepath.Join(parent, e.Name())
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, "directory "+p)
		}
	}
	return removed, errors.Join(errs...)
}

var sharedDirRE = regexp.MustCompile(`^` + sharedDirPrefix + `(\d+)-\d+$`)

func (r *runner) cleanup() error {
	var errs []error
	if r.ns != nil {
		if err := r.ns.Close(); err != nil {
			errs = append(errs, fmt.Errorf("failed to delete the network namespaces: %w", err))
		}
	}
	if r.dir != "" {
		if err := os.RemoveAll(r.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// namespaces returns the network namespaces of a transport's server and
// client ("" means the harness's own).
func (r *runner) namespaces(p Placement) (server, client string) {
	if r.ns == nil {
		return "", ""
	}
	switch p {
	case SameNamespace:
		return r.ns.Server, r.ns.Server
	case ClientOnly:
		return "", r.ns.Client
	}
	return r.ns.Server, r.ns.Client
}

// startupTimeout bounds a child's start-up and first contact.
const startupTimeout = 30 * time.Second

// stopGrace is how long a child may take to exit after its stdin closes.
const stopGrace = 2 * time.Second

// grace is stopGrace, or nothing once the run is interrupted.
func grace(ctx context.Context) time.Duration {
	if ctx.Err() != nil {
		return 0
	}
	return stopGrace
}

func (r *runner) runCell(ctx context.Context, t Transport, size int) Result {
	info := t.Info()
	res := Result{Transport: info.Name, Size: size}
	if err := t.Available(r.env, size); err != nil {
		return res.unavailable(err)
	}
	r.cell++
	cell := Cell{
		Transport:  info.Name,
		Size:       size,
		ReplySize:  r.opts.replySize(size),
		SocketPath: filepath.Join(r.dir, fmt.Sprintf("c%d.sock", r.cell)),
		ListenHost: "127.0.0.1",
	}
	if r.env.Netns && info.Placement == CrossNamespace {
		cell.ListenHost = r.env.ServerVethIP
	}
	spec := childSpec{
		Cell:          cell,
		Warmup:        r.opts.Warmup,
		WarmupTime:    r.opts.WarmupTime,
		Iterations:    r.opts.Iterations,
		MinIterations: r.opts.MinIterations,
		CellTime:      r.opts.CellTime,
		OpTimeout:     r.opts.OpTimeout,
	}
	profile := func(role string) string {
		if r.opts.CPUProfileDir == "" {
			return ""
		}
		return filepath.Join(r.opts.CPUProfileDir, fmt.Sprintf("%s_%d_%s.pprof", info.Name, size, role))
	}
	serverNS, clientNS := r.namespaces(info.Placement)

	var server *child
	if info.Placement != ClientOnly {
		s := spec
		s.Role, s.CPUProfilePath = roleServer, profile(roleServer)
		c, err := spawn(r.opts.Executable, serverNS, &s)
		if err != nil {
			return res.failed(err)
		}
		server = c
		r.pids = append(r.pids, c.pid())
		defer func() { server.stop(grace(ctx)) }()
		ev, err := server.expect(ctx, evReady, startupTimeout+r.opts.OpTimeout)
		if err != nil {
			return res.failedOr(err)
		}
		spec.Addr = ev.Addr
	}

	spec.Role, spec.CPUProfilePath = roleClient, profile(roleClient)
	client, err := spawn(r.opts.Executable, clientNS, &spec)
	if err != nil {
		return res.failed(err)
	}
	r.pids = append(r.pids, client.pid())
	defer func() { client.stop(grace(ctx)) }() // deferred last, so it stops first
	warm, err := client.expect(ctx, evWarm, startupTimeout+r.opts.WarmupTime+2*r.opts.OpTimeout)
	if err != nil {
		return res.failedOr(err)
	}
	res.WarmupOps = warm.WarmupOps

	var before Usage
	if server != nil {
		if err := server.send(cmdStart); err != nil {
			return res.failed(err)
		}
		ev, err := server.expect(ctx, evUsage, r.opts.OpTimeout)
		if err != nil {
			return res.failedOr(err)
		}
		before = *ev.Usage
	}
	if err := client.send(cmdMeasure); err != nil {
		return res.failed(err)
	}
	measureBound := r.opts.CellTime + time.Duration(r.opts.MinIterations+1)*r.opts.OpTimeout
	ev, err := client.expect(ctx, evResult, measureBound)
	if err != nil {
		return res.failedOr(err)
	}
	var after Usage
	if server != nil {
		if err := server.send(cmdStop); err != nil {
			return res.failed(err)
		}
		sev, err := server.expect(ctx, evUsage, r.opts.OpTimeout)
		if err != nil {
			return res.failedOr(err)
		}
		after = *sev.Usage
	}
	return res.measured(ev, before, after, server != nil)
}
