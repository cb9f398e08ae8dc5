package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
)

// Network namespaces of a run. Their names carry the harness's pid, so that
// a later run can tell a leftover of a dead harness (deleted by
// sweepStale) from one of a live harness (left alone):
//
//	kalpcb-<pid>-<n>-srv, kalpcb-<pid>-<n>-cli   network namespaces
//	kb<pid>-<n>s, kb<pid>-<n>c                   the veth pair's two ends
//
// The veth ends are created directly inside the namespaces, never in the
// host's, and vanish with them.
const (
	netnsPrefix = "kalpcb-"
	netnsDir    = "/run/netns"
	// ServerVethIP and ClientVethIP are the veth pair's addresses: a
	// private /30 that exists only between the two namespaces.
	ServerVethIP  = "10.203.0.1"
	ClientVethIP  = "10.203.0.2"
	vethPrefixLen = "/30"
)

var (
	netnsRE  = regexp.MustCompile(`^kalpcb-(\d+)-\d+-(srv|cli)$`)
	vethRE   = regexp.MustCompile(`^kb(\d+)-\d+[sc]$`)
	netnsSeq atomic.Int64
)

// netnsPair is the server's and the client's network namespace and the
// veth pair between them.
type netnsPair struct {
	Server, Client         string
	VethServer, VethClient string
}

// netnsNames returns fresh names for a run of this process.
func netnsNames() netnsPair {
	pid, n := os.Getpid(), netnsSeq.Add(1)
	return netnsPair{
		Server:     fmt.Sprintf("%s%d-%d-srv", netnsPrefix, pid, n),
		Client:     fmt.Sprintf("%s%d-%d-cli", netnsPrefix, pid, n),
		VethServer: fmt.Sprintf("kb%d-%ds", pid, n),
		VethClient: fmt.Sprintf("kb%d-%dc", pid, n),
	}
}

// canUseNetns returns nil if this process can create network namespaces:
// it runs as root and iproute2's ip is installed.
func canUseNetns() error {
	if os.Geteuid() != 0 {
		return errors.New("not running as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("iproute2's ip command is not installed")
	}
	return nil
}

// setupNetns creates the two namespaces and the veth pair between them. On
// failure it removes whatever it created.
func setupNetns(ctx context.Context) (p *netnsPair, err error) {
	n := netnsNames()
	p = &n
	defer func() {
		if err != nil {
			_ = p.Close()
			p = nil
		}
	}()
	steps := [][]string{
		{"netns", "add", p.Server},
		{"netns", "add", p.Client},
		{"link", "add", p.VethServer, "netns", p.Server, "type", "veth", "peer", "name", p.VethClient, "netns", p.Client},
		{"-n", p.Server, "addr", "add", ServerVethIP + vethPrefixLen, "dev", p.VethServer},
		{"-n", p.Client, "addr", "add", ClientVethIP + vethPrefixLen, "dev", p.VethClient},
		{"-n", p.Server, "link", "set", "lo", "up"},
		{"-n", p.Client, "link", "set", "lo", "up"},
		{"-n", p.Server, "link", "set", p.VethServer, "up"},
		{"-n", p.Client, "link", "set", p.VethClient, "up"},
	}
	for _, args := range steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := ip(args...); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Close deletes both namespaces, which destroys the veth pair. Every
// process inside must have exited. Missing namespaces are not an error.
func (p *netnsPair) Close() error {
	var errs []error
	for _, ns := range []string{p.Server, p.Client} {
		if err := deleteNetns(ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func deleteNetns(name string) error {
	if _, err := os.Stat(netnsDir + "/" + name); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return ip("netns", "delete", name)
}

// ip runs iproute2's ip with args.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sweepStale deletes namespaces and host veth interfaces named by this
// harness whose owning process no longer exists: leftovers of a harness
// that was killed with SIGKILL. It returns what it deleted.
func sweepStale() ([]string, error) {
	var removed []string
	var errs []error
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if m := netnsRE.FindStringSubmatch(e.Name()); m != nil && !ownerAlive(m[1]) {
			if err := deleteNetns(e.Name()); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, "netns "+e.Name())
		}
	}
	links, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return removed, errors.Join(append(errs, err)...)
	}
	for _, l := range links {
		if m := vethRE.FindStringSubmatch(l.Name()); m != nil && !ownerAlive(m[1]) {
			if err := ip("link", "delete", l.Name()); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, "link "+l.Name())
		}
	}
	return removed, errors.Join(errs...)
}

func ownerAlive(pid string) bool {
	n, err := strconv.Atoi(pid)
	return err == nil && n > 0 && processAlive(n)
}

// leftovers lists the namespaces and host interfaces of this process's
// runs that still exist (for tests).
func leftovers() []string {
	var out []string
	pid := strconv.Itoa(os.Getpid())
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if m := netnsRE.FindStringSubmatch(e.Name()); m != nil && m[1] == pid {
			out = append(out, "netns "+e.Name())
		}
	}
	links, _ := os.ReadDir("/sys/class/net")
	for _, l := range links {
		if m := vethRE.FindStringSubmatch(l.Name()); m != nil && m[1] == pid {
			out = append(out, "link "+l.Name())
		}
	}
	return out
}
