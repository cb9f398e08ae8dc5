package plugin

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

// PortSummary is one line of the ports command.
type PortSummary struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Ready is the status of the Ready condition: True, False or Unknown
	// (no condition yet, or the operator has not seen the current spec).
	Ready string `json:"ready"`
	// Reason is the Ready condition's reason.
	Reason string `json:"reason,omitempty"`
	// ReadyEndpoints and Endpoints count server pods over all nodes.
	ReadyEndpoints int `json:"readyEndpoints"`
	Endpoints      int `json:"endpoints"`
	// Nodes are the nodes with at least one ready endpoint, sorted.
	Nodes             []string    `json:"nodes"`
	CreationTimestamp metav1.Time `json:"creationTimestamp"`
}

// Summarize computes a port's summary from its status.
func Summarize(p *kalpcv1alpha1.ConnectionPort) PortSummary {
	s := PortSummary{Namespace: p.Namespace, Name: p.Name, Ready: string(metav1.ConditionUnknown),
		Nodes: []string{}, CreationTimestamp: p.CreationTimestamp}
	if c := meta.FindStatusCondition(p.Status.Conditions, kalpcv1alpha1.ConditionReady); c != nil &&
		p.Status.ObservedGeneration >= p.Generation {
		s.Ready, s.Reason = string(c.Status), c.Reason
	}
	for _, n := range p.Status.Endpoints {
		ready := false
		for _, pod := range n.Pods {
			s.Endpoints++
			if pod.Ready {
				s.ReadyEndpoints++
				ready = true
			}
		}
		if ready {
			s.Nodes = append(s.Nodes, n.NodeName)
		}
	}
	slices.Sort(s.Nodes)
	return s
}

// age formats the time since t as kubectl does ("5m", "3d").
func age(now time.Time, t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

func (c *command) portsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ports",
		Aliases: []string{"port", "cport", "cports"},
		Short:   "List ConnectionPorts with their readiness, endpoints and nodes",
		Example: `  kubectl kalpc ports -n shop
  kubectl kalpc ports -A -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.checkOutput(); err != nil {
				return err
			}
			ctx, cancel := requestContext(cmd)
			defer cancel()
			ports, err := c.listPorts(ctx)
			if err != nil {
				return err
			}
			rows := make([]PortSummary, 0, len(ports))
			for i := range ports {
				rows = append(rows, Summarize(&ports[i]))
			}
			if c.output != OutputTable {
				return printStructured(cmd.OutOrStdout(), c.output, map[string]any{"items": rows})
			}
			if len(rows) == 0 {
				_, err := fmt.Fprintln(cmd.ErrOrStderr(), "No ConnectionPorts found.")
				return err
			}
			return table(cmd.OutOrStdout(), c.withNamespace("NAME", "READY", "ENDPOINTS", "NODES", "AGE"),
				mapRows(rows, func(r PortSummary) []string {
					nodes := "<none>"
					if len(r.Nodes) > 0 {
						nodes = strings.Join(r.Nodes, ",")
					}
					return c.withNamespaceValue(r.Namespace, r.Name, r.Ready,
						strconv.Itoa(r.ReadyEndpoints)+"/"+strconv.Itoa(r.Endpoints), nodes, age(c.opts.Now(), r.CreationTimestamp))
				}))
		},
	}
	c.addOutputFlag(cmd)
	c.addAllNamespacesFlag(cmd)
	return cmd
}

// listPorts lists the ports of the namespace, or of all namespaces with -A,
// sorted by namespace and name.
func (c *command) listPorts(ctx context.Context) ([]kalpcv1alpha1.ConnectionPort, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	var opts []client.ListOption
	where := "all namespaces"
	if !c.allNamespaces {
		ns, err := c.namespace()
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.InNamespace(ns))
		where = "namespace " + ns
	}
	var list kalpcv1alpha1.ConnectionPortList
	if err := cl.List(ctx, &list, opts...); err != nil {
		return nil, fmt.Errorf("failed to list ConnectionPorts in %s: %w", where, err)
	}
	slices.SortFunc(list.Items, func(a, b kalpcv1alpha1.ConnectionPort) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return list.Items, nil
}

// withNamespace prepends NAMESPACE to header with -A, as kubectl does.
func (c *command) withNamespace(header ...string) []string {
	if c.allNamespaces {
		return append([]string{"NAMESPACE"}, header...)
	}
	return header
}

func (c *command) withNamespaceValue(ns string, cells ...string) []string {
	if c.allNamespaces {
		return append([]string{ns}, cells...)
	}
	return cells
}

func mapRows[T any](items []T, f func(T) []string) [][]string {
	out := make([][]string, 0, len(items))
	for _, it := range items {
		out = append(out, f(it))
	}
	return out
}
