//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// portStatus is the part of a ConnectionPort's status the tests read.
type portStatus struct {
	Conditions []struct {
		Type   string `json:"type"`
		Status string `json:"status"`
		Reason string `json:"reason"`
	} `json:"conditions"`
	ReadyServers int `json:"readyServers"`
	Endpoints    []struct {
		NodeName string `json:"nodeName"`
		Pods     []struct {
			Name  string `json:"name"`
			UID   string `json:"uid"`
			Ready bool   `json:"ready"`
		} `json:"pods"`
	} `json:"endpoints"`
}

// ready reports the port's Ready condition.
func (s portStatus) ready() bool {
	for _, c := range s.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// endpoint reports whether the pod with uid is an endpoint, and whether it
// is a ready one.
func (s portStatus) endpoint(uid string) (present, ready bool) {
	for _, n := range s.Endpoints {
		for _, p := range n.Pods {
			if p.UID == uid {
				return true, p.Ready
			}
		}
	}
	return false, false
}

// readyOther reports whether a pod other than uid is a ready endpoint.
func (s portStatus) readyOther(uid string) bool {
	for _, n := range s.Endpoints {
		for _, p := range n.Pods {
			if p.UID != uid && p.Ready {
				return true
			}
		}
	}
	return false
}

func (s portStatus) String() string {
	var eps []string
	for _, n := range s.Endpoints {
		for _, p := range n.Pods {
			eps = append(eps, fmt.Sprintf("%s/%s(ready=%t)", n.NodeName, p.Name, p.Ready))
		}
	}
	return fmt.Sprintf("Ready=%t readyServers=%d endpoints=[%s]", s.ready(), s.ReadyServers, strings.Join(eps, " "))
}

// getPort returns the status of ConnectionPort name in namespace.
func getPort(t *testing.T, namespace, name string) portStatus {
	t.Helper()
	var obj struct {
		Status portStatus `json:"status"`
	}
	if err := json.Unmarshal([]byte(kc(t, "-n", namespace, "get", "cport", name, "-o", "json")), &obj); err != nil {
		t.Fatal(err)
	}
	return obj.Status
}

// seenStatus is one version of a port's status, as a watch delivered it.
type seenStatus struct {
	at time.Time
	portStatus
}

// watchPort records every version of the ConnectionPort's status from now
// on (kubectl get --watch). The returned function stops the watch and
// returns what it saw, in order.
func watchPort(t *testing.T, namespace, name string) func() []seenStatus {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, kubectl, "-n", namespace, "get", "cport", name, "--watch", "--output-watch-events", "-o", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen []seenStatus
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		dec := json.NewDecoder(out)
		for {
			var ev struct {
				Object struct {
					Status portStatus `json:"status"`
				} `json:"object"`
			}
			if err := dec.Decode(&ev); err != nil {
				return
			}
			mu.Lock()
			seen = append(seen, seenStatus{time.Now(), ev.Object.Status})
			mu.Unlock()
		}
	}()
	stopped := false
	stop := func() []seenStatus {
		if !stopped {
			stopped = true
			cancel()
			_ = cmd.Wait()
			<-done
		}
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
	t.Cleanup(func() { stop() })
	return stop
}
