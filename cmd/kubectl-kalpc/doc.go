// Command kubectl-kalpc is the kubectl plugin of kalpc: on PATH, kubectl runs
// it as "kubectl kalpc". It lists ConnectionPorts, describes one with its
// endpoints per node, and lists the live connections its server sidecars
// brokered. The commands are in internal/plugin; see docs/kubectl-plugin.md.
package main
