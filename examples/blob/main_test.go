package main

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kalpc/kalpc/examples/internal/exampletest"
)

func TestMain(m *testing.M) { exampletest.Main(m, main) }

// TestBlob runs a server and two concurrent clients as separate processes:
// each uploads in loans, puts one loan and downloads a view, and each
// transfer must match by SHA-256. One client uses sizes that are not
// multiples of the chunk, and a download small enough to travel inline.
func TestBlob(t *testing.T) {
	sock := exampletest.Socket(t)
	server := exampletest.Start(t, "server", "-socket", sock)
	server.WaitFor(t, "published socket "+sock, 5*time.Second)

	clients := []struct {
		args []string
		want []string
	}{
		{
			args: []string{"-size", "24MiB", "-chunk", "1MiB"},
			want: []string{"client: upload: 24 MiB in", "client: put: 16 MiB in", "client: download: 24 MiB in", "(CallView, read in place)"},
		},
		{
			args: []string{"-size", "3000001", "-chunk", "65537"},
			want: []string{"client: upload: 3000001 B in", "client: put: 3000001 B in", "client: download: 3000001 B in"},
		},
		{
			args: []string{"-size", "1000"},
			want: []string{"client: download: 1000 B in", "(CallView, small enough to come inline)"},
		},
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			out, err := exampletest.Run(t, 20*time.Second, append([]string{"client", "-socket", sock}, c.args...)...)
			if err != nil {
				t.Errorf("client %q: %v\n%s", c.args, err, out)
			}
			exampletest.Contains(t, out, append(c.want, "client: connected to socket "+sock, "blob: all transfers verified")...)
			if n := strings.Count(out, "matches"); n != 3 {
				t.Errorf("client %q: %d hashes matched, want 3; output:\n%s", c.args, n, out)
			}
		})
	}
	wg.Wait()
	if out, err := server.Stop(t); err != nil {
		t.Errorf("server: %v\n%s", err, out)
	}
}
