package main

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dashboardPath is the Grafana dashboard the chart ships.
const dashboardPath = "../../charts/kalpc/dashboards/kalpc.json"

// metricName finds kalpc's metric names in a PromQL expression.
var metricName = regexp.MustCompile(`\bkalpc_[a-zA-Z0-9_:]*`)

// dashboardMetrics returns the metric names the dashboard's queries (the
// expr of every panel target) reference, each expression's names in order.
func dashboardMetrics(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	exprs := map[string][]string{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricName.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q names no kalpc metric", p.Title, tg.Expr)
			}
			exprs[tg.Expr] = names
		}
	}
	return exprs
}

// scrapedNames returns the names of the series in a Prometheus text
// exposition: every sample's name (a histogram's _bucket, _sum and _count).
func scrapedNames(text string) map[string]bool {
	names := map[string]bool{}
	for line := range strings.Lines(text) {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

// TestDashboardMetricsExist scrapes real sidecars (a server's and a
// client's, after accepted, application-rejected and policy-denied
// connections) on their metrics port and checks that every metric the
// chart's Grafana dashboard queries is among the scraped series, so that no
// panel stays empty for a name the sidecar does not export.
func TestDashboardMetricsExist(t *testing.T) {
	exprs := dashboardMetrics(t)
	c := newCluster(t)
	c.port("echo", echoPortSpec("client"))
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	client := c.newPod("client", "client", nil)
	intruder := c.newPod("intruder", "intruder", nil)
	server.must("publish echo")
	conn := int(client.must("connect %s/echo hello", c.ns)["conn"].(float64))
	// A section between the two applications, for the section memory the
	// applications export (pkg/alpc/alpcmetrics).
	client.must("call %d %d", conn, 16<<20)
	client.fails("rejected", "connect %s/echo reject-me", c.ns)
	intruder.fails("denied", "connect %s/echo let-me-in", c.ns)

	scraped := map[string]bool{}
	var serverText string
	for _, p := range []*pod{server, client} {
		text := p.must("metrics")["metrics"].(string)
		if p == server {
			serverText = text
		}
		for n := range scrapedNames(text) {
			scraped[n] = true
		}
	}
	// The section memory panels query what applications export with
	// pkg/alpc/alpcmetrics: the sidecars never see sections.
	var clientApp string
	for _, p := range []*pod{server, client} {
		text := p.must("app-metrics")["metrics"].(string)
		if p == client {
			clientApp = text
		}
		for n := range scrapedNames(text) {
			scraped[n] = true
		}
	}
	if !regexp.MustCompile(`(?m)^kalpc_process_section_memory_bytes [1-9]`).MatchString(clientApp) {
		t.Errorf("the client application, after a 16 MiB call, exports no section memory:\n%s", clientApp)
	}
	for expr, names := range exprs {
		for _, n := range names {
			if !scraped[n] {
				t.Errorf("dashboard query %q uses %s, which no sidecar exports; scraped: %v", expr, n, sortedKeys(scraped))
			}
		}
	}
	// The refusals by ServiceAccount are those of verified clients.
	for _, want := range []string{
		`kalpc_sidecar_refusals_total{port="` + c.ns + `/echo",result="denied",service_account="` + c.ns + `/intruder"} 1`,
		`kalpc_sidecar_refusals_total{port="` + c.ns + `/echo",result="rejected",service_account="` + c.ns + `/client"} 1`,
	} {
		if !strings.Contains(serverText, want) {
			t.Errorf("server metrics lack %s:\n%s", want, serverText)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		if strings.HasPrefix(k, "kalpc_") {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	return ks
}
