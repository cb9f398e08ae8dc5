package bench

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// SavePlot draws round-trip p50 against payload size, one line per
// transport with measured cells, on log-log axes, and saves it to path. The
// extension picks the format: .png or .svg.
func (rep *Report) SavePlot(path string) (err error) {
	defer func() {
		// gonum/plot panics on input it cannot draw; that is an error here.
		if p := recover(); p != nil {
			err = fmt.Errorf("plot %s: %v", path, p)
		}
	}()
	ext := strings.TrimPrefix(filepath.Ext(path), ".")
	if ext != "png" && ext != "svg" {
		return fmt.Errorf("plot %s: want a .png or .svg file", path)
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Round trip p50 by payload size (%s, %s)", rep.Mode, rep.Machine.CPUModel)
	p.X.Label.Text = "request payload"
	p.Y.Label.Text = "round trip p50"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker = sizeTicks(rep.Settings.SizesBytes)
	p.Y.Tick.Marker = durationTicks{}
	p.Add(plotter.NewGrid())
	// Lines rise to the right, so the bottom right corner is free.
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(8), vg.Points(8)
	p.Legend.TextStyle.Font.Size = vg.Points(9)

	n := 0
	ylo, yhi := math.Inf(1), math.Inf(-1)
	for _, t := range rep.Transports {
		var xys plotter.XYs
		for _, r := range rep.Results {
			if r.Transport == t.Name && r.Status == StatusOK && r.RTT.P50NS > 0 {
				y := float64(r.RTT.P50NS) / 1e3
				xys = append(xys, plotter.XY{X: float64(r.Size), Y: y})
				ylo, yhi = min(ylo, y), max(yhi, y)
			}
		}
		if len(xys) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return fmt.Errorf("plot %s: %w", t.Name, err)
		}
		line.Color, points.Color = plotutil.Color(n), plotutil.Color(n)
		line.Dashes = plotutil.Dashes(n / len(plotutil.DefaultColors))
		line.Width = vg.Points(1.5)
		points.Shape = plotutil.Shape(n)
		p.Add(line, points)
		p.Legend.Add(t.Label, line, points)
		n++
	}
	if n == 0 {
		return fmt.Errorf("plot %s: no measured cells", path)
	}
	// Explicit, padded ranges: a log axis cannot span a single value.
	sizes := rep.Settings.SizesBytes
	p.X.Min, p.X.Max = float64(slices.Min(sizes))/1.5, float64(slices.Max(sizes))*1.5
	p.Y.Min, p.Y.Max = ylo/1.5, yhi*1.5
	if err := p.Save(9*vg.Inch, 6*vg.Inch, path); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}

// sizeTicks labels the x axis at the run's sizes.
func sizeTicks(sizes []int) plot.ConstantTicks {
	var ts plot.ConstantTicks
	for _, s := range sizes {
		ts = append(ts, plot.Tick{Value: float64(s), Label: FormatSize(int64(s))})
	}
	return ts
}

// durationTicks labels a microsecond log axis at powers of ten.
type durationTicks struct{}

func (durationTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		v := math.Pow10(int(e))
		ts = append(ts, plot.Tick{Value: v, Label: decadeLabel(e)})
		for i := 2; i < 10; i++ {
			ts = append(ts, plot.Tick{Value: v * float64(i)})
		}
	}
	return ts
}

// decadeLabel names 10^e microseconds: "10 ns", "1 µs", "100 ms", "10 s".
func decadeLabel(e float64) string {
	units := []string{"ns", "µs", "ms", "s"}
	exp := int(e) + 3 // in nanoseconds
	if exp < 0 {
		return fmt.Sprintf("%g ns", math.Pow10(exp))
	}
	u := min(exp/3, len(units)-1)
	return fmt.Sprintf("%g %s", math.Pow10(exp-3*u), units[u])
}
