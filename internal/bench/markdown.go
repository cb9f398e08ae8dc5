package bench

import (
	"fmt"
	"strings"
)

// Markdown renders the report as markdown: the machine and command, the
// table of cells, the ratios and what was not measured. Headings are level
// three so the text can sit inside a larger document. plot, if not empty,
// is the path (relative to the document) of the round-trip plot.
func (rep *Report) Markdown(plot string) string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "### Run\n\n")
	fmt.Fprintf(&b, "- Command: `%s`\n", rep.Command)
	fmt.Fprintf(&b, "- Date: %s, %.0f s\n", rep.Started.Format("2006-01-02 15:04 UTC"), rep.DurationSeconds)
	fmt.Fprintf(&b, "- Machine: %s, %d cores, %s memory; Linux %s; %s %s\n", m.CPUModel, m.Cores, formatBytes(m.MemoryBytes), m.Kernel, m.GoVersion, m.Arch)
	switch rep.Mode {
	case ModeNetns:
		fmt.Fprintf(&b, "- Placement: server and client in two network namespaces joined by a veth pair (%s/%s), sharing one directory\n", ServerVethIP, ClientVethIP)
	default:
		fmt.Fprintf(&b, "- Placement: **loopback fallback**: %s\n", rep.Notice)
	}
	s := rep.Settings
	reply := fmt.Sprintf("a %d B reply", AckSize)
	if s.Reply == ReplyEcho {
		reply = "a reply of the same size (echo)"
	}
	fmt.Fprintf(&b, "- Each round trip sends a request of the given size and waits for %s. Per cell: fresh processes, up to %d warm-up round trips (%.2g s), then up to %d round trips for at most %.2g s (at least %d).",
		reply, s.Warmup, s.WarmupTimeSeconds, s.Iterations, s.CellTimeSeconds, s.MinIterations)
	if s.Rounds > 1 {
		fmt.Fprintf(&b, " Every cell ran in each of %d rounds (one sweep of all cells after another); the table shows each cell's median round.", s.Rounds)
	}
	b.WriteString("\n\n")

	if plot != "" {
		fmt.Fprintf(&b, "![Round-trip p50 against payload size, log-log](%s)\n\n", plot)
	}

	fmt.Fprintf(&b, "### Results\n\n")
	fmt.Fprintf(&b, "| transport | size | p50 | p99 | mean | throughput | CPU/op client + server | peak RSS client / server | ops |\n")
	fmt.Fprintf(&b, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	labels := map[string]string{}
	for _, t := range rep.Transports {
		labels[t.Name] = t.Label
	}
	for _, r := range rep.Results {
		size := FormatSize(int64(r.Size))
		switch r.Status {
		case StatusOK:
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s + %s | %s / %s | %d |\n",
				labels[r.Transport], size, formatNS(r.RTT.P50NS), formatNS(r.RTT.P99NS), formatNS(r.RTT.MeanNS),
				formatRate(r.ThroughputBytesPerSecond), formatNS(r.CPUPerOp.ClientNS), formatNS(r.CPUPerOp.ServerNS),
				formatBytes(r.PeakRSS.ClientBytes), rssOrDash(r.PeakRSS.ServerBytes), r.Ops)
		case StatusFailed:
			fmt.Fprintf(&b, "| %s | %s | **failed** | | | | | | |\n", labels[r.Transport], size)
		}
	}
	b.WriteString("\n")

	fmt.Fprintf(&b, "### Ratios\n\n")
	fmt.Fprintf(&b, "| ratio | value | goal | met |\n| --- | ---: | ---: | --- |\n")
	for _, r := range rep.Ratios {
		value, met := "n/a", ""
		if r.Value != nil {
			value = fmt.Sprintf("%.2f", *r.Value)
		}
		switch {
		case r.Met != nil && *r.Met:
			met = "yes"
		case r.Met != nil:
			met = "**no**"
		case r.Goal != "":
			met = "not evaluated: " + r.Note
		case r.Value == nil:
			met = r.Note
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.Description, value, r.Goal, met)
	}
	b.WriteString("\n")

	if notes := rep.notMeasured(labels); len(notes) > 0 {
		fmt.Fprintf(&b, "### Not measured\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func rssOrDash(n int64) string {
	if n == 0 {
		return "–"
	}
	return formatBytes(n)
}

// notMeasured groups unavailable and failed cells by transport and reason.
func (rep *Report) notMeasured(labels map[string]string) []string {
	type key struct{ transport, status, note string }
	var order []key
	sizes := map[key][]string{}
	for _, r := range rep.Results {
		if r.Status == StatusOK {
			continue
		}
		k := key{r.Transport, r.Status, r.Note}
		if _, ok := sizes[k]; !ok {
			order = append(order, k)
		}
		sizes[k] = append(sizes[k], FormatSize(int64(r.Size)))
	}
	var out []string
	for _, k := range order {
		verb := "not available"
		if k.status == StatusFailed {
			verb = "**failed**"
		}
		out = append(out, fmt.Sprintf("%s at %s: %s: %s", labels[k.transport], strings.Join(sizes[k], ", "), verb, k.note))
	}
	return out
}
