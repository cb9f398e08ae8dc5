package connections

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/kalpc/kalpc/internal/podid"
)

// Path is where the sidecar serves the list, on its metrics server.
const Path = "/debug/connections"

// Pod is one end of a connection: a pod and its ServiceAccount, as the
// sidecars verified them from the pod's projected token.
type Pod struct {
	// Namespace is the pod's namespace.
	Namespace string `json:"namespace"`
	// Name is the pod's name.
	Name string `json:"name"`
	// UID is the pod's UID.
	UID string `json:"uid"`
	// ServiceAccount is the pod's ServiceAccount.
	ServiceAccount string `json:"serviceAccount,omitempty"`
}

// PodOf is a verified identity in the list's JSON form: the one place a
// podid.Identity becomes a Pod.
func PodOf(id podid.Identity) Pod {
	return Pod{Namespace: id.Namespace, Name: id.PodName, UID: id.PodUID, ServiceAccount: id.ServiceAccount}
}

// Connection is one brokered connection whose channel is, as far as the
// server sidecar knows, still open.
type Connection struct {
	// ID identifies the connection among those of one sidecar run.
	ID uint64 `json:"id"`
	// Port is the ConnectionPort, "namespace/name".
	Port string `json:"port"`
	// Client is the connecting pod.
	Client Pod `json:"client"`
	// Server is the pod serving the port: the sidecar's own pod.
	Server Pod `json:"server"`
	// Node is the node both pods run on.
	Node string `json:"node,omitempty"`
	// Since is when the server sidecar handed the channel over.
	Since time.Time `json:"since"`
}

// List is the document served at Path.
type List struct {
	// Pod is the sidecar's own pod.
	Pod Pod `json:"pod"`
	// Node is the sidecar's node.
	Node string `json:"node,omitempty"`
	// SidecarStarted is when this sidecar started: connections brokered by
	// an earlier run of the pod's sidecar are not listed.
	SidecarStarted time.Time `json:"sidecarStarted"`
	// Connections are the open connections, oldest first.
	Connections []Connection `json:"connections"`
}

// Registry holds the connections a sidecar brokered. It is safe for
// concurrent use; the zero value is ready to use.
type Registry struct {
	mu    sync.Mutex
	next  uint64
	conns map[uint64]Connection
}

// Add records c, with a new ID, and returns that ID.
func (r *Registry) Add(c Connection) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		r.conns = make(map[uint64]Connection)
	}
	r.next++
	c.ID = r.next
	r.conns[c.ID] = c
	return c.ID
}

// Remove drops the connections with the given IDs; unknown IDs are ignored.
func (r *Registry) Remove(ids ...uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		delete(r.conns, id)
	}
}

// Connections returns the recorded connections, oldest first.
func (r *Registry) Connections() []Connection {
	r.mu.Lock()
	out := make([]Connection, 0, len(r.conns))
	for _, c := range r.conns {
		out = append(out, c)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Connection) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// Handler serves the list as JSON to GET and HEAD requests; list fills in
// everything but Connections, which come from r.
func (r *Registry) Handler(list List) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		l := list
		l.Connections = r.Connections()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(l)
	})
}
