package plugin

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at link time (-X github.com/kalpc/kalpc/internal/plugin.version=...)
// by make plugin and make binaries.
var version string

// buildVersion is the version of the binary: the link-time version, else
// the module version `go install ...@vX` recorded, else "dev".
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// VersionInfo is what the version command prints.
type VersionInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

func (c *command) versionCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.checkOutput(); err != nil {
				return err
			}
			v := VersionInfo{Version: c.opts.Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
			if c.output != OutputTable {
				return printStructured(cmd.OutOrStdout(), c.output, v)
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "kubectl-kalpc %s (%s, %s)\n", v.Version, v.GoVersion, v.Platform)
			return err
		},
	}
	c.addOutputFlag(cmd)
	return cmd
}
