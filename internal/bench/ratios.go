package bench

import (
	"fmt"
	"slices"
)

// Ratio compares two cells of a run. Ratios with a Goal are the project's
// performance goals (issue 4); the others are for context.
type Ratio struct {
	// ID is the ratio's stable identifier.
	ID string `json:"id"`
	// Description says what is divided by what.
	Description string `json:"description"`
	// Value is the ratio, or null if it could not be evaluated.
	Value *float64 `json:"value"`
	// Goal is the target, such as "<= 1.5"; empty for context ratios.
	Goal string `json:"goal,omitempty"`
	// Met says whether Value meets Goal; null without both.
	Met *bool `json:"met"`
	// Note says why the ratio was not evaluated.
	Note string `json:"note,omitempty"`
}

type metric string

const (
	metricP50        metric = "p50"
	metricThroughput metric = "throughput"
	metricCPU        metric = "cpu"
)

type ratioDef struct {
	id, desc string
	num, den string // transports
	numSize  int
	denSize  int
	metric   metric
	op       string // "<=", ">=" or "" (context only)
	target   float64
}

var ratioDefs = []ratioDef{
	{id: "kalpc-64b-p50-vs-raw-seqpacket", desc: "64 B round trip p50: kalpc inline / raw SOCK_SEQPACKET", num: "kalpc-inline", den: "raw-seqpacket", numSize: 64, denSize: 64, metric: metricP50, op: "<=", target: 1.5},
	{id: "grpc-veth-64b-p50-vs-kalpc", desc: "64 B round trip p50: gRPC TCP over veth / kalpc inline", num: "grpc-tcp-veth", den: "kalpc-inline", numSize: 64, denSize: 64, metric: metricP50, op: ">=", target: 5},
	{id: "kalpc-16mib-throughput-vs-grpc-veth", desc: "16 MiB throughput: kalpc section copy / gRPC TCP over veth", num: "kalpc-section", den: "grpc-tcp-veth", numSize: 16 << 20, denSize: 16 << 20, metric: metricThroughput, op: ">=", target: 10},
	{id: "kalpc-16mib-throughput-vs-copy", desc: "16 MiB throughput: kalpc section copy / one in-process copy()", num: "kalpc-section", den: "copy", numSize: 16 << 20, denSize: 16 << 20, metric: metricThroughput, op: ">=", target: 0.5},
	{id: "kalpc-loan-16mib-vs-64b-p50", desc: "kalpc loan round trip p50: 16 MiB / 64 B", num: "kalpc-loan", den: "kalpc-loan", numSize: 16 << 20, denSize: 64, metric: metricP50, op: "<=", target: 3},

	// The default path (issue: "fast where users are"): Call + Payload
	// against the socket floor and the zero-copy path, at 1 and 16 MiB.
	{id: "kalpc-call-1mib-throughput-vs-raw-seqpacket", desc: "1 MiB throughput: kalpc Call + Payload (default path) / raw SOCK_SEQPACKET", num: "kalpc-call", den: "raw-seqpacket", numSize: 1 << 20, denSize: 1 << 20, metric: metricThroughput, op: ">=", target: 1},
	{id: "kalpc-call-16mib-throughput-vs-raw-seqpacket", desc: "16 MiB throughput: kalpc Call + Payload (default path) / raw SOCK_SEQPACKET", num: "kalpc-call", den: "raw-seqpacket", numSize: 16 << 20, denSize: 16 << 20, metric: metricThroughput, op: ">=", target: 1},
	{id: "kalpc-call-16mib-throughput-vs-section-view", desc: "16 MiB throughput: kalpc Call + Payload (default path) / kalpc section read in place (View)", num: "kalpc-call", den: "kalpc-section", numSize: 16 << 20, denSize: 16 << 20, metric: metricThroughput, op: ">=", target: 0.5},

	{id: "grpc-unix-64b-p50-vs-kalpc", desc: "64 B round trip p50: gRPC over a Unix socket / kalpc inline", num: "grpc-unix", den: "kalpc-inline", numSize: 64, denSize: 64, metric: metricP50},
	{id: "grpc-loopback-64b-p50-vs-kalpc", desc: "64 B round trip p50: gRPC TCP loopback / kalpc inline", num: "grpc-tcp-loopback", den: "kalpc-inline", numSize: 64, denSize: 64, metric: metricP50},
	{id: "grpc-veth-64b-cpu-vs-kalpc", desc: "64 B CPU time per round trip (both processes): gRPC TCP over veth / kalpc inline", num: "grpc-tcp-veth", den: "kalpc-inline", numSize: 64, denSize: 64, metric: metricCPU},
	{id: "kalpc-60kib-p50-vs-raw-seqpacket", desc: "60 KiB round trip p50: kalpc inline / raw SOCK_SEQPACKET", num: "kalpc-inline", den: "raw-seqpacket", numSize: 60 << 10, denSize: 60 << 10, metric: metricP50},
	{id: "kalpc-60kib-throughput-vs-grpc-veth", desc: "60 KiB throughput: kalpc inline / gRPC TCP over veth", num: "kalpc-inline", den: "grpc-tcp-veth", numSize: 60 << 10, denSize: 60 << 10, metric: metricThroughput},
	{id: "raw-seqpacket-16mib-throughput-vs-copy", desc: "16 MiB throughput: raw SOCK_SEQPACKET (64 KiB records) / one in-process copy()", num: "raw-seqpacket", den: "copy", numSize: 16 << 20, denSize: 16 << 20, metric: metricThroughput},
	{id: "grpc-veth-64b-p50-vs-grpc-kalpc-native", desc: "64 B round trip p50: gRPC TCP over veth / gRPC over kalpc (native)", num: "grpc-tcp-veth", den: "grpc-kalpc-native", numSize: 64, denSize: 64, metric: metricP50},
	{id: "grpc-veth-64b-p50-vs-grpc-kalpc-compat", desc: "64 B round trip p50: gRPC TCP over veth / gRPC over kalpc (compat)", num: "grpc-tcp-veth", den: "grpc-kalpc-compat", numSize: 64, denSize: 64, metric: metricP50},
	{id: "grpc-kalpc-native-16mib-throughput-vs-grpc-veth", desc: "16 MiB throughput: gRPC over kalpc (native) / gRPC TCP over veth", num: "grpc-kalpc-native", den: "grpc-tcp-veth", numSize: 16 << 20, denSize: 16 << 20, metric: metricThroughput},
	{id: "grpc-veth-16mib-throughput-vs-copy", desc: "16 MiB throughput: gRPC TCP over veth / one in-process copy()", num: "grpc-tcp-veth", den: "copy", numSize: 16 << 20, denSize: 16 << 20, metric: metricThroughput},
}

func evaluateRatios(rep *Report) []Ratio {
	out := make([]Ratio, 0, len(ratioDefs))
	for _, d := range ratioDefs {
		r := Ratio{ID: d.id, Description: d.desc}
		if d.op != "" {
			r.Goal = fmt.Sprintf("%s %g", d.op, d.target)
		}
		num, nerr := rep.value(d.num, d.numSize, d.metric)
		den, derr := rep.value(d.den, d.denSize, d.metric)
		switch {
		case nerr != nil:
			r.Note = nerr.Error()
		case derr != nil:
			r.Note = derr.Error()
		case den == 0:
			r.Note = fmt.Sprintf("%s at %s measured zero", d.den, FormatSize(int64(d.denSize)))
		default:
			v := num / den
			r.Value = &v
			if d.op != "" {
				met := v <= d.target
				if d.op == ">=" {
					met = v >= d.target
				}
				r.Met = &met
			}
		}
		out = append(out, r)
	}
	return out
}

// value returns a cell's figure, or an error saying why there is none.
func (rep *Report) value(transport string, size int, m metric) (float64, error) {
	if !slices.Contains(rep.Settings.SizesBytes, size) {
		return 0, fmt.Errorf("%s is not among this run's sizes", FormatSize(int64(size)))
	}
	res, ok := rep.result(transport, size)
	if !ok {
		switch res.Status {
		case "":
			return 0, fmt.Errorf("%s was not measured", transport)
		case StatusUnavailable:
			return 0, fmt.Errorf("%s at %s is not available: %s", transport, FormatSize(int64(size)), res.Note)
		}
		return 0, fmt.Errorf("%s at %s failed", transport, FormatSize(int64(size)))
	}
	switch m {
	case metricP50:
		return float64(res.RTT.P50NS), nil
	case metricThroughput:
		return res.ThroughputBytesPerSecond, nil
	}
	return float64(res.CPUPerOp.TotalNS), nil
}
