package plugin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/sidecar/connections"
)

// fetchConcurrency bounds the sidecars asked at once.
const fetchConcurrency = 8

// ConnectionReport is what connections prints with -o json or yaml.
type ConnectionReport struct {
	// Items are the connections, by port and then oldest first.
	Items []connections.Connection `json:"items"`
	// Errors name the server pods whose sidecars could not be read
	// ("pod NS/NAME: reason", e.g. a pod that is terminating): their
	// connections are missing from Items.
	Errors []string `json:"errors,omitempty"`
}

// ErrNoSidecarRead is returned by the connections command when server pods
// were listed but not one of their sidecars could be read.
var ErrNoSidecarRead = errors.New("no server sidecar could be read")

func (c *command) connectionsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "connections [PORT]",
		Aliases: []string{"connection", "conns"},
		Short:   "List the live connections of ConnectionPorts, as their server sidecars brokered them",
		Long: `List the connections of a port (or of every port in the namespace, or with -A
in the cluster), read from the sidecar of every server pod in the ports'
status.endpoints through the API server's pods/proxy subresource.

A sidecar lists its connections only to a bearer token that the API server
authenticates and allows get on pods/proxy of the sidecar's pod. The
command forwards the kubeconfig's own bearer token (a token, token file or
exec plugin), or the one in --sidecar-token-file: a kubeconfig that
authenticates with a client certificate needs --sidecar-token-file. The
token reaches every sidecar asked; see docs/kubectl-plugin.md.

A server sidecar lists a connection from the moment it handed the channel over
until the server application reports the channel closed (the kalpc library
does so as soon as either application closes it or dies) or stops publishing
the port. Connections brokered before the sidecar last restarted are not
listed. No message content is ever shown: sidecars never see it.

A server sidecar that cannot be read (its pod terminating, say) is marked
"unreachable" on stderr and under errors with -o json|yaml; the others are
listed and the command succeeds. It fails only when no sidecar could be read.`,
		Example: `  kubectl kalpc connections echo -n shop
  kubectl kalpc connections -A -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.checkOutput(); err != nil {
				return err
			}
			if len(args) == 1 && c.allNamespaces {
				return errors.New("a PORT name cannot be combined with --all-namespaces")
			}
			ctx, cancel := requestContext(cmd)
			defer cancel()
			var ports []kalpcv1alpha1.ConnectionPort
			if len(args) == 1 {
				p, err := c.getPort(ctx, args[0])
				if err != nil {
					return err
				}
				ports = []kalpcv1alpha1.ConnectionPort{*p}
			} else {
				var err error
				if ports, err = c.listPorts(ctx); err != nil {
					return err
				}
			}
			f, err := c.fetcher()
			if err != nil {
				return err
			}
			report, asked := CollectConnections(ctx, f, ports)
			// Sidecars that could not be read (a pod terminating, say) are
			// marked, and the rest is listed.
			for _, e := range report.Errors {
				_, _ = fmt.Fprintln(cmd.ErrOrStderr(), "unreachable:", e+"; its connections are not listed")
			}
			nothingRead := asked > 0 && len(report.Errors) == asked
			switch {
			case c.output != OutputTable:
				if err := printStructured(cmd.OutOrStdout(), c.output, report); err != nil {
					return err
				}
			case nothingRead: // the error below says so
			case len(report.Items) == 0:
				_, _ = fmt.Fprintln(cmd.ErrOrStderr(), "No connections found.")
			default:
				now := c.opts.Now()
				rows := mapRows(report.Items, func(cn connections.Connection) []string {
					port := cn.Port
					if _, name, ok := strings.Cut(cn.Port, "/"); ok && !c.allNamespaces {
						port = name // every port is in the one namespace
					}
					return []string{port, cn.Client.Namespace + "/" + cn.Client.Name, cn.Client.ServiceAccount,
						cn.Server.Name, cn.Node, age(now, metav1.NewTime(cn.Since))}
				})
				if err := table(cmd.OutOrStdout(), []string{"PORT", "CLIENT", "SERVICE ACCOUNT", "SERVER", "NODE", "AGE"}, rows); err != nil {
					return err
				}
			}
			if nothingRead {
				return fmt.Errorf("%w (%d server pod(s) asked)", ErrNoSidecarRead, asked)
			}
			return nil
		},
	}
	c.addOutputFlag(cmd)
	c.addAllNamespacesFlag(cmd)
	cmd.Flags().StringVar(&c.sidecarToken, "sidecar-token-file", "",
		"File holding the bearer token to present to the sidecars (e.g. from kubectl create token). Defaults to the kubeconfig's own bearer token; needed when the kubeconfig authenticates with a client certificate.")
	return cmd
}

func (c *command) getPort(ctx context.Context, name string) (*kalpcv1alpha1.ConnectionPort, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	ns, err := c.namespace()
	if err != nil {
		return nil, err
	}
	var p kalpcv1alpha1.ConnectionPort
	if err := cl.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
		return nil, fmt.Errorf("failed to get ConnectionPort %s/%s: %w", ns, name, err)
	}
	return &p, nil
}

// CollectConnections asks the sidecar of every server pod in the ports'
// status.endpoints (ready or not: a pod that is not ready may still hold
// connections) for its list, once per pod, and keeps the connections of
// the given ports, sorted by port and then oldest first. asked is the
// number of sidecars asked; the report's Errors name those that could not
// be read.
func CollectConnections(ctx context.Context, f Fetcher, ports []kalpcv1alpha1.ConnectionPort) (report ConnectionReport, asked int) {
	keys := map[string]bool{}
	var pods []PodRef
	seen := map[PodRef]bool{}
	for _, p := range ports {
		keys[p.Namespace+"/"+p.Name] = true
		for _, n := range p.Status.Endpoints {
			for _, pod := range n.Pods {
				ref := PodRef{Namespace: p.Namespace, Name: pod.Name}
				if !seen[ref] {
					seen[ref] = true
					pods = append(pods, ref)
				}
			}
		}
	}
	type result struct {
		list *connections.List
		err  error
	}
	results := make([]result, len(pods))
	sem := make(chan struct{}, fetchConcurrency)
	var wg sync.WaitGroup
	for i, ref := range pods {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			l, err := f.Connections(ctx, ref)
			results[i] = result{l, err}
		})
	}
	wg.Wait()
	report = ConnectionReport{Items: []connections.Connection{}}
	for i, r := range results {
		if r.err != nil {
			report.Errors = append(report.Errors, fmt.Sprintf("pod %s: %v", pods[i], r.err))
			continue
		}
		for _, cn := range r.list.Connections {
			if keys[cn.Port] {
				report.Items = append(report.Items, cn)
			}
		}
	}
	slices.SortFunc(report.Items, func(a, b connections.Connection) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), a.Since.Compare(b.Since),
			cmp.Compare(a.Server.Name, b.Server.Name), cmp.Compare(a.ID, b.ID))
	})
	return report, len(pods)
}
