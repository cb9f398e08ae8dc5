package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// compareSizes are the payload sizes of -compare and how many calls each.
var compareSizes = []struct {
	size, calls int
}{
	{64, 2000},
	{64 << 10, 1000},
	{1 << 20, 200},
}

type result struct {
	p50, p99 time.Duration
	mbps     float64 // payload MB/s, each way
}

// compare runs the same echo calls over the kalpc connection and over gRPC
// (TCP through the pod network to the server pod's IP), checking every
// reply's content, and prints a side-by-side table.
func compare(ctx context.Context, conn *alpc.Conn) error {
	addr, err := conn.Call(ctx, []byte("grpc-addr"))
	if err != nil {
		return fmt.Errorf("asking the server for its gRPC address: %w", err)
	}
	cc, err := dialGRPC(string(addr))
	if err != nil {
		return err
	}
	defer cc.Close()

	grpcCall := func(p []byte) ([]byte, error) { return grpcEcho(ctx, cc, p) }

	var table bytes.Buffer
	w := tabwriter.NewWriter(&table, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "size\tcalls\tkalpc p50\tgRPC p50\tkalpc p99\tgRPC p99\tkalpc MB/s\tgRPC MB/s\tp50 gRPC/kalpc\tMB/s kalpc/gRPC\t\n")
	for _, s := range compareSizes {
		payload := pattern(s.size, byte(s.size))
		// The request is built once, as gRPC's is: "echo:" and the payload.
		req := append([]byte("echo:"), payload...)
		kalpcCall := func([]byte) ([]byte, error) { return conn.Call(ctx, req) }
		k, err := measure(payload, s.calls, kalpcCall)
		if err != nil {
			return fmt.Errorf("kalpc at %d B: %w", s.size, err)
		}
		g, err := measure(payload, s.calls, grpcCall)
		if err != nil {
			return fmt.Errorf("gRPC to %s at %d B: %w", addr, s.size, err)
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%.3g\t%.3g\t%.1fx\t%.1fx\t\n", sizeName(s.size), s.calls,
			us(k.p50), us(g.p50), us(k.p99), us(g.p99), k.mbps, g.mbps,
			float64(g.p50)/float64(k.p50), k.mbps/g.mbps)
	}
	log.Printf("compare: the same echo calls, every reply checked, from pod %s in %s:", hostname(), netns())
	log.Printf("compare: kalpc over its channel (no network) vs gRPC over TCP to the server pod at %s (pod network)", addr)
	if err := w.Flush(); err != nil {
		return err
	}
	_, err = os.Stderr.Write(table.Bytes()) // where log writes, so the lines stay in order
	return err
}

// measure makes calls echo calls of payload after a short warm-up, checking
// each reply, and returns the latency percentiles and throughput.
func measure(payload []byte, calls int, call func([]byte) ([]byte, error)) (result, error) {
	for range min(calls/10, 50) {
		if _, err := call(payload); err != nil {
			return result{}, err
		}
	}
	lat := make([]time.Duration, 0, calls)
	start := time.Now()
	for range calls {
		t := time.Now()
		out, err := call(payload)
		if err != nil {
			return result{}, err
		}
		lat = append(lat, time.Since(t))
		if !bytes.Equal(out, payload) {
			return result{}, fmt.Errorf("reply of %d B differs from the %d B sent", len(out), len(payload))
		}
	}
	total := time.Since(start)
	slices.Sort(lat)
	return result{
		p50:  lat[len(lat)/2],
		p99:  lat[len(lat)*99/100],
		mbps: float64(len(payload)) * float64(calls) / total.Seconds() / 1e6,
	}, nil
}

func us(d time.Duration) string {
	return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/1e3)
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
