package bench

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes the host a report was made on.
type Machine struct {
	// CPUModel is /proc/cpuinfo's "model name".
	CPUModel string `json:"cpu_model"`
	// Cores is the number of CPUs the harness may use.
	Cores int `json:"cores"`
	// Kernel is the kernel release (uname -r).
	Kernel string `json:"kernel"`
	// MemoryBytes is the total memory (/proc/meminfo MemTotal).
	MemoryBytes int64 `json:"memory_bytes"`
	// GoVersion is the Go toolchain the harness was built with.
	GoVersion string `json:"go_version"`
	// Arch is GOOS/GOARCH.
	Arch string `json:"arch"`
}

func readMachine() Machine {
	m := Machine{
		CPUModel:  "unknown",
		Cores:     runtime.NumCPU(),
		Kernel:    kernelRelease(),
		GoVersion: runtime.Version(),
		Arch:      runtime.GOOS + "/" + runtime.GOARCH,
	}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		m.CPUModel = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		if kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64); err == nil {
			m.MemoryBytes = kb * 1024
		}
	}
	return m
}

// procField returns the first "key: value" line's value in a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
