package plugin

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

// maxEvents is how many of the most recent events describe shows.
const maxEvents = 20

// Description is what describe prints with -o json or yaml.
type Description struct {
	Port   *kalpcv1alpha1.ConnectionPort `json:"port"`
	Events []corev1.Event                `json:"events"`
}

func (c *command) describeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe PORT",
		Short: "Show a ConnectionPort's rules, endpoints per node, conditions and recent events",
		Example: `  kubectl kalpc describe echo -n shop
  kubectl kalpc describe echo -n shop -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.checkOutput(); err != nil {
				return err
			}
			ctx, cancel := requestContext(cmd)
			defer cancel()
			d, err := c.describe(ctx, args[0])
			if err != nil {
				return err
			}
			if c.output != OutputTable {
				return printStructured(cmd.OutOrStdout(), c.output, d)
			}
			return printDescription(cmd.OutOrStdout(), d, c.opts.Now())
		},
	}
	c.addOutputFlag(cmd)
	return cmd
}

func (c *command) describe(ctx context.Context, name string) (*Description, error) {
	p, err := c.getPort(ctx, name)
	if err != nil {
		return nil, err
	}
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	ns := p.Namespace
	p.ManagedFields = nil
	var events corev1.EventList
	// Events recorded through events.k8s.io are listed by the core API too.
	sel := fields.SelectorFromSet(fields.Set{
		"involvedObject.uid":  string(p.UID),
		"involvedObject.kind": "ConnectionPort",
	})
	if err := cl.List(ctx, &events, client.InNamespace(ns), client.MatchingFieldsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("failed to list the events of ConnectionPort %s/%s: %w", ns, name, err)
	}
	slices.SortFunc(events.Items, func(a, b corev1.Event) int {
		return cmp.Or(eventTime(a).Compare(eventTime(b)), cmp.Compare(a.Name, b.Name))
	})
	if n := len(events.Items); n > maxEvents {
		events.Items = events.Items[n-maxEvents:]
	}
	for i := range events.Items {
		events.Items[i].ManagedFields = nil
	}
	return &Description{Port: p, Events: events.Items}, nil
}

// eventTime is when an event last happened, whichever API recorded it.
func eventTime(e corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// printDescription writes d as kubectl describe would.
func printDescription(w io.Writer, d *Description, now time.Time) error {
	p := d.Port
	pw := &prefixWriter{w: w}
	pw.line(0, "Name:", p.Name)
	pw.line(0, "Namespace:", p.Namespace)
	pw.line(0, "Created:", p.CreationTimestamp.UTC().Format(time.RFC3339)+" ("+age(now, p.CreationTimestamp)+" ago)")
	gen := strconv.FormatInt(p.Generation, 10)
	if p.Status.ObservedGeneration < p.Generation {
		gen += " (the operator has not yet seen it: status is of generation " + strconv.FormatInt(p.Status.ObservedGeneration, 10) + ")"
	}
	pw.line(0, "Generation:", gen)
	pw.line(0, "Servers:", selectorString(&p.Spec.Servers, "pods"))
	pw.line(0, "Clients:", "")
	if p.Spec.Clients == nil {
		pw.line(1, "<not set: only pods in namespace "+p.Namespace+">")
	}
	for i, r := range p.Spec.Clients {
		pw.line(1, strconv.Itoa(i+1)+". "+clientRuleString(r, p.Namespace))
	}
	mp := p.Spec.MessagePolicy
	pw.line(0, "Message Policy:", "")
	pw.line(1, "Inline Limit:", bytesString(mp.InlineLimitBytes))
	pw.line(1, "Max Message:", bytesString(mp.MaxMessageBytes))
	sections := "<default>"
	if mp.MaxSectionBytesPerConnection != nil {
		sections = bytesString(*mp.MaxSectionBytesPerConnection)
		if *mp.MaxSectionBytesPerConnection == 0 {
			sections = "0 (sections disabled)"
		}
	}
	pw.line(1, "Max Section Bytes/Conn:", sections)
	pw.line(1, "Max Pending Messages:", strconv.Itoa(int(mp.MaxPendingMessages)))
	pw.line(1, "Max Connections:", strconv.Itoa(int(mp.MaxConnections))+" per server pod")
	direct := "<default: false>"
	if mp.DirectAccess != nil {
		direct = strconv.FormatBool(*mp.DirectAccess)
	}
	pw.line(1, "Direct Access:", direct)

	s := Summarize(p)
	pw.line(0, "Ready:", s.Ready+reasonSuffix(s.Reason))
	pw.line(0, "Endpoints:", fmt.Sprintf("%d ready of %d, on %d node(s) with a ready server", s.ReadyEndpoints, s.Endpoints, len(s.Nodes)))
	if len(p.Status.Endpoints) > 0 {
		var rows [][]string
		for _, n := range p.Status.Endpoints {
			for _, pod := range n.Pods {
				rows = append(rows, []string{n.NodeName, pod.Name, strconv.FormatBool(pod.Ready), string(pod.UID)})
			}
		}
		if err := pw.table([]string{"NODE", "POD", "READY", "UID"}, rows); err != nil {
			return err
		}
		// Whether clients on each node can connect: kalpc connects only
		// to servers on the client's node, and a server pod is ready only
		// while it publishes the port (docs/sidecar.md).
		pw.line(0, "Reachable From:", "")
		rows = nil
		for _, n := range p.Status.Endpoints {
			ready := 0
			for _, pod := range n.Pods {
				if pod.Ready {
					ready++
				}
			}
			reach := "yes"
			if ready == 0 {
				reach = "no (no ready server on this node)"
			}
			rows = append(rows, []string{n.NodeName, fmt.Sprintf("%d/%d", ready, len(n.Pods)), reach})
		}
		if err := pw.table([]string{"NODE", "SERVERS", "REACHABLE"}, rows); err != nil {
			return err
		}
	}
	pw.line(0, "Conditions:", "")
	if len(p.Status.Conditions) == 0 {
		pw.line(1, "<none>")
	} else {
		rows := mapRows(p.Status.Conditions, func(c metav1.Condition) []string {
			return []string{c.Type, string(c.Status), c.Reason, age(now, c.LastTransitionTime), c.Message}
		})
		if err := pw.table([]string{"TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"}, rows); err != nil {
			return err
		}
	}
	pw.line(0, "Events:", "")
	if len(d.Events) == 0 {
		pw.line(1, "<none>")
	} else {
		rows := mapRows(d.Events, func(e corev1.Event) []string {
			from := e.ReportingController
			if from == "" {
				from = e.Source.Component
			}
			a := age(now, metav1.NewTime(eventTime(e)))
			if e.Count > 1 {
				a += " (x" + strconv.Itoa(int(e.Count)) + ")"
			} else if e.Series != nil && e.Series.Count > 1 {
				a += " (x" + strconv.Itoa(int(e.Series.Count)) + ")"
			}
			return []string{e.Type, e.Reason, a, from, strings.TrimSpace(e.Message)}
		})
		if err := pw.table([]string{"TYPE", "REASON", "AGE", "FROM", "MESSAGE"}, rows); err != nil {
			return err
		}
	}
	return pw.err
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + reason + ")"
}

// selectorString renders a label selector; what names what {} selects.
func selectorString(sel *kalpcv1alpha1.LabelSelector, what string) string {
	if sel == nil {
		return "<not set>"
	}
	s, err := sel.AsSelector()
	if err != nil {
		return "<invalid: " + err.Error() + ">"
	}
	if s.Empty() {
		return "<all " + what + ">"
	}
	return s.String()
}

// clientRuleString renders one client rule as its ANDed conditions.
func clientRuleString(r kalpcv1alpha1.ClientRule, portNamespace string) string {
	var parts []string
	switch {
	case len(r.Namespaces) > 0 && r.NamespaceSelector != nil:
		parts = append(parts, "namespaces "+strings.Join(r.Namespaces, ",")+" matching "+selectorString(r.NamespaceSelector, "namespaces"))
	case len(r.Namespaces) > 0:
		parts = append(parts, "namespaces "+strings.Join(r.Namespaces, ","))
	case r.NamespaceSelector != nil:
		parts = append(parts, "namespaces matching "+selectorString(r.NamespaceSelector, "namespaces"))
	default:
		parts = append(parts, "namespace "+portNamespace)
	}
	if len(r.ServiceAccounts) > 0 {
		parts = append(parts, "serviceaccounts "+strings.Join(r.ServiceAccounts, ","))
	}
	if r.PodSelector != nil {
		parts = append(parts, "pods "+selectorString(r.PodSelector, "pods"))
	}
	return strings.Join(parts, "; ")
}

// bytesString renders a byte count with its binary unit when it has one.
func bytesString(n int64) string {
	if n == 0 {
		return "<default>"
	}
	for _, u := range []struct {
		shift uint
		name  string
	}{{30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d (%d %s)", n, n>>u.shift, u.name)
		}
	}
	return strconv.FormatInt(n, 10)
}

// prefixWriter writes describe's indented "Label: value" lines and tables,
// keeping the first error.
type prefixWriter struct {
	w   io.Writer
	err error
}

func (p *prefixWriter) line(level int, cells ...string) {
	if p.err != nil {
		return
	}
	indent := strings.Repeat("  ", level)
	text := strings.TrimRight(strings.Join(cells, " "), " ")
	if len(cells) == 2 && level == 0 {
		text = strings.TrimRight(fmt.Sprintf("%-16s%s", cells[0], cells[1]), " ")
	} else if len(cells) == 2 {
		text = strings.TrimRight(fmt.Sprintf("%-24s%s", cells[0], cells[1]), " ")
	}
	_, p.err = io.WriteString(p.w, indent+text+"\n")
}

// table writes a table one level in, under the heading before it.
func (p *prefixWriter) table(header []string, rows [][]string) error {
	if p.err != nil {
		return p.err
	}
	const indent = "  "
	var b strings.Builder
	if err := table(&b, header, rows); err != nil {
		return err
	}
	for l := range strings.Lines(b.String()) {
		if _, p.err = io.WriteString(p.w, indent+l); p.err != nil {
			return p.err
		}
	}
	return nil
}
