// Command pause is the local cluster's pod sandbox process (containerd's
// sandbox_image): it holds the pod's namespaces, reaps orphaned children and
// exits on SIGINT or SIGTERM, like registry.k8s.io/pause, which cannot be
// pulled on machines without a registry. hack/local-cluster/up builds it into
// an image with hack/image.
//
// This is a test tool, not part of kalpc's product binaries.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
