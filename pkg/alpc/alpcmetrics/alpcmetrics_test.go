//go:build linux && !kalpc_stub

package alpcmetrics_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kalpc/kalpc/pkg/alpc"
	"github.com/kalpc/kalpc/pkg/alpc/alpcmetrics"
)

// TestCollector sends a message large enough for a section over a real
// connection and checks the collector reports the section memory the
// sender holds, the bytes the receiver mapped and the limits.
func TestCollector(t *testing.T) {
	const size = 8 << 20
	handler := alpc.HandlerFunc(func(_ context.Context, r *alpc.Request) ([]byte, error) {
		v := r.View()
		defer v.Release()
		return []byte{byte(v.Len() >> 20)}, nil
	})
	fa, fb, err := alpc.SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		c   *alpc.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := alpc.FileConn(t.Context(), fa, &alpc.Config{Handler: handler})
		ch <- res{c, err}
	}()
	b, err := alpc.FileConn(t.Context(), fb, nil)
	r := <-ch
	_ = fa.Close()
	_ = fb.Close()
	if err != nil || r.err != nil {
		t.Fatal(err, r.err)
	}
	a := r.c
	defer a.Close()
	defer b.Close()
	if out, err := b.Call(t.Context(), bytes.Repeat([]byte{1}, size)); err != nil || len(out) != 1 || out[0] != size>>20 {
		t.Fatalf("call: %v %v", out, err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(alpcmetrics.NewCollector())
	u, l := alpc.GetProcessUsage(), alpc.GetProcessLimits()
	if u.SectionMemory < size || u.MappedBytes < size || u.Mappings < 1 {
		t.Fatalf("after an 8 MiB section both ways in one process: usage %+v", u)
	}
	for name, want := range map[string]float64{
		"kalpc_process_section_memory_bytes":       float64(u.SectionMemory),
		"kalpc_process_section_memory_limit_bytes": float64(l.MaxSectionMemory),
		"kalpc_process_mapped_bytes":               float64(u.MappedBytes),
		"kalpc_process_mapped_limit_bytes":         float64(l.MaxMappedBytes),
		"kalpc_process_mappings":                   float64(u.Mappings),
		"kalpc_process_mappings_limit":             float64(l.MaxMappings),
	} {
		got, err := gauge(reg, name)
		if err != nil || got != want {
			t.Errorf("%s = %v (%v); want %v", name, got, err, want)
		}
	}
}

func gauge(reg *prometheus.Registry, name string) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue(), nil
		}
	}
	return -1, nil
}
