package connections_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kalpc/kalpc/internal/plugin"
	"github.com/kalpc/kalpc/internal/podid"
	"github.com/kalpc/kalpc/internal/sidecar/connections"
)

var (
	serverID = podid.Identity{Namespace: "srv", ServiceAccount: "server", PodName: "server-0", PodUID: "u-server"}
	clientID = podid.Identity{Namespace: "apps", ServiceAccount: "client", PodName: "client-0", PodUID: "u-client"}
)

// TestPodOfIsTheJSONFormOfAnIdentity: the JSON boundary names each field
// of the identity once, under the names kubectl kalpc decodes.
func TestPodOfIsTheJSONFormOfAnIdentity(t *testing.T) {
	b, err := json.Marshal(connections.PodOf(clientID))
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"namespace":"apps","name":"client-0","uid":"u-client","serviceAccount":"client"}`
	if string(b) != want {
		t.Errorf("PodOf(%v) = %s, want %s", clientID, b, want)
	}
}

// TestRegistryListsOldestFirst: IDs are fresh per Add, Remove drops only
// the IDs named, and the list is ordered by Since, then ID.
func TestRegistryListsOldestFirst(t *testing.T) {
	var r connections.Registry // the zero value is ready
	if got := r.Connections(); len(got) != 0 {
		t.Fatalf("empty registry lists %v", got)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	conn := func(port string, since time.Time) connections.Connection {
		return connections.Connection{Port: port, Client: connections.PodOf(clientID), Server: connections.PodOf(serverID), Since: since}
	}
	late := r.Add(conn("srv/late", t0.Add(time.Minute)))
	early := r.Add(conn("srv/early", t0))
	tie := r.Add(conn("srv/tie", t0)) // same Since as early, larger ID
	gone := r.Add(conn("srv/gone", t0.Add(-time.Minute)))
	if ids := []uint64{late, early, tie, gone}; ids[0] == 0 || ids[0] >= ids[1] || ids[1] >= ids[2] || ids[2] >= ids[3] {
		t.Fatalf("IDs %v are not fresh and increasing", ids)
	}
	r.Remove(gone, 9999) // an unknown ID is ignored
	var ports []string
	for _, c := range r.Connections() {
		ports = append(ports, c.Port)
	}
	if want := []string{"srv/early", "srv/tie", "srv/late"}; !cmp.Equal(ports, want) {
		t.Errorf("listed %v, want %v", ports, want)
	}
}

// TestRegistryConcurrentUse: Adds and Removes from many goroutines leave
// exactly the connections not removed (run with -race).
func TestRegistryConcurrentUse(t *testing.T) {
	var r connections.Registry
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				id := r.Add(connections.Connection{Port: "srv/p", Since: time.Now()})
				if i%2 == 0 {
					r.Remove(id)
				}
			}
		}()
	}
	wg.Wait()
	if n := len(r.Connections()); n != 8*50 {
		t.Errorf("%d connections listed, want %d", n, 8*50)
	}
}

// TestHandlerServesTheList serves a registry over real HTTP and decodes
// the answer the way kubectl kalpc does.
func TestHandlerServesTheList(t *testing.T) {
	var r connections.Registry
	started := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	since := started.Add(time.Minute)
	r.Add(connections.Connection{Port: "srv/echo", Client: connections.PodOf(clientID), Server: connections.PodOf(serverID), Node: "node-a", Since: since})
	srv := httptest.NewServer(r.Handler(connections.List{Pod: connections.PodOf(serverID), Node: "node-a", SidecarStarted: started}))
	defer srv.Close()

	resp, err := http.Get(srv.URL + connections.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET: %s, Content-Type %q, Cache-Control %q", resp.Status, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"))
	}
	got, err := plugin.DecodeList(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	want := &connections.List{Pod: connections.PodOf(serverID), Node: "node-a", SidecarStarted: started,
		Connections: []connections.Connection{{ID: 1, Port: "srv/echo", Client: connections.PodOf(clientID), Server: connections.PodOf(serverID), Node: "node-a", Since: since}}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("decoded list differs (-want +got):\n%s", d)
	}

	// An empty registry lists [], not null: kubectl's table and -o json
	// show an empty list.
	var empty connections.Registry
	rec := httptest.NewRecorder()
	empty.Handler(connections.List{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, connections.Path, nil))
	if !strings.Contains(rec.Body.String(), `"connections":[]`) {
		t.Errorf("empty list: %s", rec.Body)
	}
}

// TestHandlerIsReadOnly: HEAD is served, every other method but GET is
// refused with 405 and an Allow header.
func TestHandlerIsReadOnly(t *testing.T) {
	var r connections.Registry
	srv := httptest.NewServer(r.Handler(connections.List{}))
	defer srv.Close()
	head, err := http.Head(srv.URL + connections.Path)
	if err != nil {
		t.Fatal(err)
	}
	_ = head.Body.Close()
	if head.StatusCode != http.StatusOK {
		t.Errorf("HEAD: %s", head.Status)
	}
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		req, _ := http.NewRequest(method, srv.URL+connections.Path, strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %s, Allow %q, body %q", method, resp.Status, resp.Header.Get("Allow"), body)
		}
	}
}
