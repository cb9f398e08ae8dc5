package bench

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultSizes are the payload sizes of a full run.
var DefaultSizes = []int{64, 4 << 10, 60 << 10, 1 << 20, 16 << 20, 64 << 20}

// QuickSizes are the payload sizes of a -quick run.
var QuickSizes = []int{64, 4 << 10, 60 << 10, 1 << 20}

// maxSize bounds a payload size: one buffer of it is held by each side.
const maxSize = 1 << 30

// ParseSize parses a size such as "64", "64B", "4KiB", "4k", "1MiB" or "1M".
// Suffixes are binary (K = 1024).
func ParseSize(s string) (int, error) {
	t := strings.TrimSpace(s)
	mult := 1
	lower := strings.ToLower(t)
	for _, u := range []struct {
		suffix string
		mult   int
	}{
		{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
		{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30},
		{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"b", 1},
	} {
		if strings.HasSuffix(lower, u.suffix) {
			lower, mult = strings.TrimSuffix(lower, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.Atoi(strings.TrimSpace(lower))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid size %q: want a positive number with an optional B, KiB, MiB or GiB suffix", s)
	}
	if n > maxSize/mult {
		return 0, fmt.Errorf("size %q exceeds the 1 GiB maximum", s)
	}
	return n * mult, nil
}

// ParseSizes parses a comma-separated list of sizes (see ParseSize).
func ParseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		n, err := ParseSize(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no sizes in %q", s)
	}
	return out, nil
}

// FormatSize renders n bytes the way sizes are written in flags and tables:
// "64 B", "4 KiB", "1.5 MiB".
func FormatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
