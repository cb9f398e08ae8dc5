package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

// Output formats of -o.
const (
	OutputTable = "table"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// Options configure the kubectl kalpc command.
type Options struct {
	// IOStreams are the command's standard streams (required).
	IOStreams genericiooptions.IOStreams
	// Version is printed by the version command. Defaults to the module
	// version the binary was built from, or "dev".
	Version string
	// Fetcher reaches the sidecars for the connections command. Defaults
	// to a ProxyFetcher built from the kubeconfig flags.
	Fetcher Fetcher
	// Now is the clock ages are computed from. Defaults to time.Now.
	Now func() time.Time
}

// command is the state shared by the subcommands.
type command struct {
	opts          Options
	flags         *genericclioptions.ConfigFlags
	output        string
	allNamespaces bool
	sidecarToken  string
}

// NewCommand returns the root command of kubectl kalpc.
func NewCommand(opts Options) *cobra.Command {
	if opts.Version == "" {
		opts.Version = buildVersion()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &command{opts: opts, flags: genericclioptions.NewConfigFlags(true)}
	root := &cobra.Command{
		Use:   "kubectl-kalpc",
		Short: "Inspect kalpc connection ports, their endpoints and live connections",
		Long: `kubectl kalpc shows kalpc's ConnectionPorts, their server endpoints per
node and the connections their server sidecars brokered and still list as
open. Install the kubectl-kalpc binary on PATH and run it as "kubectl kalpc".`,
		Annotations: map[string]string{
			// Shown as "kubectl kalpc" in usage when run through kubectl.
			cobra.CommandDisplayNameAnnotation: "kubectl kalpc",
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetIn(opts.IOStreams.In)
	root.SetOut(opts.IOStreams.Out)
	root.SetErr(opts.IOStreams.ErrOut)
	c.flags.AddFlags(root.PersistentFlags())
	root.AddCommand(c.portsCommand(), c.describeCommand(), c.connectionsCommand(), c.versionCommand())
	return root
}

func (c *command) addOutputFlag(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&c.output, "output", "o", OutputTable, "Output format: table, json or yaml.")
}

func (c *command) addAllNamespacesFlag(cmd *cobra.Command) {
	cmd.Flags().BoolVarP(&c.allNamespaces, "all-namespaces", "A", false, "List across all namespaces (ignores --namespace).")
}

func (c *command) checkOutput() error {
	switch c.output {
	case OutputTable, OutputJSON, OutputYAML:
		return nil
	}
	return fmt.Errorf("--output: %q is not one of table, json, yaml", c.output)
}

// namespace is the namespace of --namespace, or of the kubeconfig context.
func (c *command) namespace() (string, error) {
	ns, _, err := c.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", fmt.Errorf("failed to determine the namespace: %w", err)
	}
	return ns, nil
}

// client returns a client for ConnectionPorts, Pods and Events.
func (c *command) client() (client.Client, error) {
	cfg, err := c.flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("failed to load the kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := kalpcv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("failed to create the API client: %w", err)
	}
	return cl, nil
}

// fetcher returns Options.Fetcher or a ProxyFetcher.
func (c *command) fetcher() (Fetcher, error) {
	if c.opts.Fetcher != nil {
		return c.opts.Fetcher, nil
	}
	cfg, err := c.flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("failed to load the kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(WithSidecarToken(cfg, c.sidecarToken))
	if err != nil {
		return nil, fmt.Errorf("failed to create the API client: %w", err)
	}
	return ProxyFetcher{Clientset: cs}, nil
}

// printStructured writes v as JSON or YAML.
func printStructured(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if format == OutputYAML {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
	} else {
		b = append(b, '\n')
	}
	_, err = w.Write(b)
	return err
}

// table writes tab-separated rows aligned as kubectl does.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	write := func(cells []string) {
		for i, s := range cells {
			if i > 0 {
				_, _ = io.WriteString(tw, "\t")
			}
			_, _ = io.WriteString(tw, s)
		}
		_, _ = io.WriteString(tw, "\n")
	}
	write(header)
	for _, r := range rows {
		write(r)
	}
	return tw.Flush()
}

// requestContext bounds one command's API calls.
func requestContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), 60*time.Second)
}
