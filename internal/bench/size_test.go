package bench

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{in: "64", want: 64},
		{in: "64B", want: 64},
		{in: "4KiB", want: 4 << 10},
		{in: "4k", want: 4 << 10},
		{in: " 60 KiB ", want: 60 << 10},
		{in: "1MiB", want: 1 << 20},
		{in: "16M", want: 16 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "2GiB", wantErr: true},
		{in: "0", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "KiB", wantErr: true},
		{in: "1.5MiB", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseSizesRoundTripsFormatSize(t *testing.T) {
	got, err := ParseSizes("64,4KiB,60KiB,1MiB,16MiB,64MiB")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(DefaultSizes, got); diff != "" {
		t.Errorf("ParseSizes (-want +got):\n%s", diff)
	}
	for _, s := range DefaultSizes {
		back, err := ParseSize(FormatSize(int64(s)))
		if err != nil || back != s {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", s, back, err)
		}
	}
}

func TestSummarize(t *testing.T) {
	var samples []time.Duration
	for i := 100; i >= 1; i-- {
		samples = append(samples, time.Duration(i)*time.Microsecond)
	}
	got := summarize(samples)
	want := Latency{P50NS: 50_000, P99NS: 99_000, MeanNS: 50_500, MinNS: 1_000, MaxNS: 100_000, StddevNS: 28_866}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("summarize (-want +got):\n%s", diff)
	}
	if got := summarize([]time.Duration{7}); got.P50NS != 7 || got.P99NS != 7 {
		t.Errorf("one sample: %+v", got)
	}
	if got := summarize(nil); got != (Latency{}) {
		t.Errorf("no samples: %+v", got)
	}
}

func TestDecadeLabel(t *testing.T) {
	for e, want := range map[float64]string{-2: "10 ns", -1: "100 ns", 0: "1 µs", 1: "10 µs", 3: "1 ms", 5: "100 ms", 6: "1 s", 7: "10 s"} {
		if got := decadeLabel(e); got != want {
			t.Errorf("decadeLabel(%v) = %q, want %q", e, got, want)
		}
	}
}
