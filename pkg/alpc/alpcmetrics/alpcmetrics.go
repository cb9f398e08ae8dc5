// Package alpcmetrics exports what kalpc holds in an application process
// (shared-memory sections it lent, peers' memory it mapped, mappings) and
// the process-wide limits on them as Prometheus metrics.
//
// The kalpc sidecar sees connections being made, never the traffic on
// them: sections go straight between the two applications. An application
// that wants its section memory on the kalpc dashboard registers the
// collector on the registry it serves:
//
//	prometheus.MustRegister(alpcmetrics.NewCollector())
//
// Every scrape reads one consistent snapshot (alpc.GetProcessUsage and
// alpc.GetProcessLimits); the collector holds nothing between scrapes.
package alpcmetrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kalpc/kalpc/pkg/alpc"
)

var (
	sectionMemory = prometheus.NewDesc("kalpc_process_section_memory_bytes",
		"Memory in the shared-memory sections this process created to send large messages (charged to it, lent to peers until they release it).", nil, nil)
	sectionMemoryLimit = prometheus.NewDesc("kalpc_process_section_memory_limit_bytes",
		"The most memory this process may put in its sections (alpc.ProcessLimits.MaxSectionMemory).", nil, nil)
	mappedBytes = prometheus.NewDesc("kalpc_process_mapped_bytes",
		"Bytes of peers' sections and granted regions this process has mapped (their memory, charged to them).", nil, nil)
	mappedBytesLimit = prometheus.NewDesc("kalpc_process_mapped_limit_bytes",
		"The most bytes of peers' memory this process may map at once (alpc.ProcessLimits.MaxMappedBytes).", nil, nil)
	mappings = prometheus.NewDesc("kalpc_process_mappings",
		"Memory mappings kalpc holds for sections and granted regions.", nil, nil)
	mappingsLimit = prometheus.NewDesc("kalpc_process_mappings_limit",
		"The most memory mappings kalpc may hold (alpc.ProcessLimits.MaxMappings).", nil, nil)
)

type collector struct{}

// NewCollector returns a collector of this process's kalpc usage and
// limits. Register it once per registry.
func NewCollector() prometheus.Collector { return collector{} }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sectionMemory, sectionMemoryLimit, mappedBytes, mappedBytesLimit, mappings, mappingsLimit} {
		ch <- d
	}
}

func (collector) Collect(ch chan<- prometheus.Metric) {
	u, l := alpc.GetProcessUsage(), alpc.GetProcessLimits()
	for _, m := range []struct {
		d *prometheus.Desc
		v float64
	}{
		{sectionMemory, float64(u.SectionMemory)},
		{sectionMemoryLimit, float64(l.MaxSectionMemory)},
		{mappedBytes, float64(u.MappedBytes)},
		{mappedBytesLimit, float64(l.MaxMappedBytes)},
		{mappings, float64(u.Mappings)},
		{mappingsLimit, float64(l.MaxMappings)},
	} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.GaugeValue, m.v)
	}
}
