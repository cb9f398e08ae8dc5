package bench

import (
	"math"
	"slices"
	"time"
)

// Latency summarises the round-trip times of a cell, in nanoseconds.
type Latency struct {
	// P50NS is the median round trip.
	P50NS int64 `json:"p50_ns"`
	// P99NS is the 99th percentile (nearest rank).
	P99NS int64 `json:"p99_ns"`
	// MeanNS is the arithmetic mean.
	MeanNS int64 `json:"mean_ns"`
	// MinNS and MaxNS are the extremes.
	MinNS int64 `json:"min_ns"`
	MaxNS int64 `json:"max_ns"`
	// StddevNS is the population standard deviation.
	StddevNS int64 `json:"stddev_ns"`
}

// summarize computes a Latency from samples, which it sorts in place.
func summarize(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	slices.Sort(samples)
	var sum float64
	for _, d := range samples {
		sum += float64(d)
	}
	mean := sum / float64(len(samples))
	var sq float64
	for _, d := range samples {
		sq += (float64(d) - mean) * (float64(d) - mean)
	}
	return Latency{
		P50NS:    int64(percentile(samples, 50)),
		P99NS:    int64(percentile(samples, 99)),
		MeanNS:   int64(math.Round(mean)),
		MinNS:    int64(samples[0]),
		MaxNS:    int64(samples[len(samples)-1]),
		StddevNS: int64(math.Round(math.Sqrt(sq / float64(len(samples))))),
	}
}

// percentile returns the nearest-rank p-th percentile of sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}
