package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/internal/podid"
	"github.com/kalpc/kalpc/internal/sidecar/identity"
	"github.com/kalpc/kalpc/internal/sidecar/metrics"
	"github.com/kalpc/kalpc/internal/sidecar/policy"
)

// These are the sidecar's pure parts; brokering itself, with real
// sidecar processes, an API server and the node directory, is tested in
// cmd/sidecar.

// TestRefusalCodes: every failure reaches the requester with the code
// its library maps to an error, the metrics label of that code, and a
// reason that does not repeat the kind of failure the code names.
func TestRefusalCodes(t *testing.T) {
	cases := []struct {
		err    error
		code   ctl.Code
		result string
		reason string
	}{
		{refuse(ctl.CodeLimit, "server pod %s is full", "p"), ctl.CodeLimit, metrics.ResultLimit, "server pod p is full"},
		{fmt.Errorf("wrapped: %w", refuse(ctl.CodeRejected, "%s", "no thanks")), ctl.CodeRejected, metrics.ResultRejected, "wrapped: no thanks"},
		{fmt.Errorf("%w: no ConnectionPort a/b", policy.ErrPortNotFound), ctl.CodePortNotFound, metrics.ResultPortNotFound, "no ConnectionPort a/b"},
		{fmt.Errorf("%w: pod x does not match", policy.ErrNotServer), ctl.CodeNotServer, metrics.ResultNotServer, "pod x does not match"},
		{fmt.Errorf("%w: no rule", policy.ErrDenied), ctl.CodeDenied, metrics.ResultDenied, "no rule"},
		{fmt.Errorf("%w: API down", policy.ErrUnavailable), ctl.CodeUnavailable, metrics.ResultUnavailable, policy.ErrUnavailable.Error() + ": API down"},
		{fmt.Errorf("%w: forged", identity.ErrUnauthenticated), ctl.CodeUnauthenticated, metrics.ResultUnauthenticated, "token not authenticated: forged"},
		{fmt.Errorf("%w: endpoint of uid u", errServerIdentity), ctl.CodeServerIdentity, metrics.ResultServerIdentity, "server identity not verified: endpoint of uid u"},
		{errors.New("anything else"), ctl.CodeUnavailable, metrics.ResultUnavailable, "anything else"},
	}
	for _, tc := range cases {
		code := codeOf(tc.err)
		if code != tc.code || resultOf(code) != tc.result {
			t.Errorf("%v: code %v, result %q; want %v, %q", tc.err, code, resultOf(code), tc.code, tc.result)
		}
		if tc.code != ctl.CodeUnavailable || errors.Is(tc.err, policy.ErrUnavailable) {
			if got := reasonOf(tc.err); got != tc.reason {
				t.Errorf("reasonOf(%v) = %q, want %q", tc.err, got, tc.reason)
			}
		}
	}
	if got := resultOf(ctl.Code(999)); got != metrics.ResultError {
		t.Errorf("resultOf(unknown) = %q, want %q", got, metrics.ResultError)
	}
}

// TestCheckUnavailable tells a check that could not be made from one
// that failed: only the first lets a client try again later instead of
// calling a server an impostor.
func TestCheckUnavailable(t *testing.T) {
	for err, want := range map[error]bool{
		refuse(ctl.CodeUnavailable, "API server down"):              true,
		fmt.Errorf("%w: timeout", policy.ErrUnavailable):            true,
		refuse(ctl.CodeUnauthenticated, "replayed"):                 false,
		fmt.Errorf("%w: no match", policy.ErrNotServer):             false,
		errors.New("endpoint of pod uid u presented another token"): false,
	} {
		if got := checkUnavailable(err); got != want {
			t.Errorf("checkUnavailable(%v) = %v, want %v", err, got, want)
		}
	}
}

// TestRefusalMessageIsSafeToSend: a reason with invalid UTF-8 or longer
// than the protocol carries is cleaned and cut, and the message then
// travels over a real socket and decodes.
func TestRefusalMessageIsSafeToSend(t *testing.T) {
	a, b := unixpacketPair(t)
	long := strings.Repeat("é", ctl.MaxErrorMessage) // 2 bytes a rune: cut mid-rune
	for _, reason := range []string{"plain", "bad \xff\xfe bytes", long} {
		m := refusalMessage(ctl.TypeError, 7, ctl.CodeRejected, reason)
		if !utf8.ValidString(m.Reason) || len(m.Reason) > ctl.MaxErrorMessage {
			t.Fatalf("reason of %d bytes: cleaned to %d bytes, valid UTF-8 %v", len(reason), len(m.Reason), utf8.ValidString(m.Reason))
		}
		if err := ctl.Write(a, m, nil); err != nil {
			t.Fatalf("writing the refusal of a %d-byte reason: %v", len(reason), err)
		}
		got, f, err := ctl.Read(b)
		if err != nil || f != nil {
			t.Fatalf("reading it back: %v (file %v)", err, f)
		}
		if got.Type != ctl.TypeError || got.ID != 7 || got.Code != ctl.CodeRejected || got.Reason != m.Reason {
			t.Errorf("read back %+v, sent %+v", got, m)
		}
	}
	if m := refusalMessage(ctl.TypeError, 0, ctl.CodeInvalid, "bad \xff"); m.Reason != "bad \uFFFD" {
		t.Errorf("invalid byte: reason %q", m.Reason)
	}
}

// TestRefuseConnAnswersAndBoundsItsLogging: a connection refused for want
// of room gets the refusal its peer understands, is counted every time,
// and is logged at most once per refusalLogInterval.
func TestRefuseConnAnswersAndBoundsItsLogging(t *testing.T) {
	var logs bytes.Buffer
	s := &Sidecar{metrics: metrics.New(), log: slog.New(slog.NewTextHandler(&logs, nil))}
	for _, tc := range []struct {
		listener string
		typ      ctl.Type
		flag     string
	}{{metrics.ListenerPod, ctl.TypeError, "--max-app-connections"}, {metrics.ListenerEndpoint, ctl.TypePeerRefused, "--max-peer-connections"}} {
		for range 3 {
			a, b := unixpacketPair(t)
			s.refuseConn(a, tc.listener, 4)
			m, _, err := ctl.Read(b)
			if err != nil {
				t.Fatalf("%s: reading the refusal: %v", tc.listener, err)
			}
			if m.Type != tc.typ || m.Code != ctl.CodeLimit || !strings.Contains(m.Reason, tc.flag) {
				t.Errorf("%s: refusal %+v, want %v, CodeLimit, naming %s", tc.listener, m, tc.typ, tc.flag)
			}
			if _, _, err := ctl.Read(b); err == nil {
				t.Errorf("%s: the refused connection is still open", tc.listener)
			}
		}
		if n := refusedCount(t, s.metrics, tc.listener); n != 3 {
			t.Errorf("%s: %v refusals counted, want 3", tc.listener, n)
		}
	}
	if n := strings.Count(logs.String(), "refusing connections"); n != 1 {
		t.Errorf("6 refusals within %v logged %d times, want once:\n%s", refusalLogInterval, n, logs.String())
	}
}

// TestRetryForbidden retries 403 answers only during ForbiddenGrace, and
// within the caller's context.
func TestRetryForbidden(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "p", errors.New("no RBAC yet"))
	s := &Sidecar{started: time.Now(), opts: Options{ForbiddenGrace: time.Minute}}
	calls := 0
	err := s.retryForbidden(context.Background(), func() error {
		calls++
		if calls < 3 {
			return forbidden
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("within the grace: err %v after %d calls, want nil after 3", err, calls)
	}

	other := errors.New("not found")
	calls = 0
	if err := s.retryForbidden(context.Background(), func() error { calls++; return other }); err != other || calls != 1 {
		t.Errorf("another error: %v after %d calls, want it after 1", err, calls)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.retryForbidden(ctx, func() error { return forbidden }); !apierrors.IsForbidden(err) || time.Since(start) > 5*time.Second {
		t.Errorf("context ended: %v after %v, want the 403 at once", err, time.Since(start))
	}

	s.started = time.Now().Add(-2 * time.Minute)
	calls = 0
	if err := s.retryForbidden(context.Background(), func() error { calls++; return forbidden }); !apierrors.IsForbidden(err) || calls != 1 {
		t.Errorf("after the grace: %v after %d calls, want the 403 after 1", err, calls)
	}
}

// TestServersRun says where a port's servers are when none is on the
// client's node.
func TestServersRun(t *testing.T) {
	port := func(nodes ...string) *kalpcv1alpha1.ConnectionPort {
		p := &kalpcv1alpha1.ConnectionPort{}
		for _, n := range nodes {
			p.Status.Endpoints = append(p.Status.Endpoints, kalpcv1alpha1.NodeEndpoints{NodeName: n, Pods: []kalpcv1alpha1.EndpointPod{{Name: "s-" + n, UID: "u"}}})
		}
		return p
	}
	var many []string
	for i := range maxNodesNamed + 3 {
		many = append(many, fmt.Sprintf("n%d", i))
	}
	empty := port("b")
	empty.Status.Endpoints[0].Pods = nil
	for _, tc := range []struct {
		port *kalpcv1alpha1.ConnectionPort
		want string
	}{
		{port(), "the port has no server pods on any node"},
		{empty, "the port has no server pods on any node"},
		{port("b", "c"), "its server pods run on b, c (ConnectionPort status); run one on this node or wait for one"},
		{port("here", "b"), "its server pods run on here (this node: not published yet), b"},
		{port(many...), "its server pods run on n0, n1, n2, n3, n4, n5, n6, n7 and 3 other nodes"},
	} {
		if got := serversRun(tc.port, "here"); !strings.Contains(got, tc.want) {
			t.Errorf("serversRun = %q, want it to contain %q", got, tc.want)
		}
	}
}

func TestMinTime(t *testing.T) {
	var zero time.Time
	a := time.Now()
	b := a.Add(time.Second)
	for _, tc := range []struct{ x, y, want time.Time }{{a, b, a}, {b, a, a}, {zero, b, b}, {a, zero, a}, {zero, zero, zero}} {
		if got := minTime(tc.x, tc.y); !got.Equal(tc.want) {
			t.Errorf("minTime(%v, %v) = %v, want %v", tc.x, tc.y, got, tc.want)
		}
	}
}

// TestNewChecksOptions refuses options the sidecar cannot run with, and
// says which.
func TestNewChecksOptions(t *testing.T) {
	cases := map[string]Options{
		"pod socket, node directory and token file are required": {NodeDir: "/d", TokenFile: "/t"},
		"pod name, namespace and a valid UID are required":       {PodSocket: "/s", NodeDir: "/d", TokenFile: "/t"},
		"API readers and the TokenReview client are required": {PodSocket: "/s", NodeDir: "/d", TokenFile: "/t",
			Pod: selfPod()},
	}
	bad := Options{PodSocket: "/s", NodeDir: "/d", TokenFile: "/t", Pod: selfPod()}
	bad.Pod.PodUID = "../escape"
	cases["pod name, namespace and a valid UID are required"] = bad
	for want, opts := range cases {
		if _, err := New(opts); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%+v) = %v, want an error saying %q", opts, err, want)
		}
	}
}

func selfPod() podid.Identity {
	return podid.Identity{Namespace: "srv", ServiceAccount: "server", PodName: "server-0", PodUID: "2b7c9f6e-0000-4000-8000-000000000001"}
}

// unixpacketPair returns two connected SOCK_SEQPACKET sockets, closed
// when the test ends.
func unixpacketPair(t *testing.T) (a, b *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b, err = net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	a, err = ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

// refusedCount reads RefusedConnections of listener as a scrape would.
func refusedCount(t *testing.T, m *metrics.Metrics, listener string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if !strings.HasSuffix(f.GetName(), "refused_connections_total") {
			continue
		}
		for _, c := range f.GetMetric() {
			for _, l := range c.GetLabel() {
				if l.GetName() == "listener" && l.GetValue() == listener {
					return c.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
