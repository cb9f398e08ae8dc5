//go:build linux && !kalpc_stub

package alpc

import (
	"errors"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"strings"
	"testing"

	"github.com/kalpc/kalpc/internal/ctl"
)

// The messages a new user meets first say what to do, not only what went
// wrong (issue 18, item 5).

// TestNoSidecarSaysWhichLabel: an application in a pod without the
// sidecar (KALPC_SOCKET unset) used to get "no kalpc broker: KALPC_SOCKET
// is not set"; it now learns which label injects the sidecar.
func TestNoSidecarSaysWhichLabel(t *testing.T) {
	t.Setenv(EnvSocket, "")
	_, cerr := Connect(t.Context(), "demo/echo", nil, nil)
	_, perr := Publish(t.Context(), "echo", nil)
	for _, err := range []error{cerr, perr} {
		if !errors.Is(err, ErrNoBroker) {
			t.Fatalf("err = %v, want ErrNoBroker", err)
		}
		for _, want := range []string{"KALPC_SOCKET is not set", "no kalpc sidecar", `kalpc.io/inject: "true"`, "kalpc.io/injection: enabled"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q does not say %q", err, want)
			}
		}
	}
	t.Logf("connect: %v", cerr)

	// KALPC_SOCKET set but nobody listening: the sidecar is not running.
	t.Setenv(EnvSocket, t.TempDir()+"/kalpc.sock")
	_, err := Connect(t.Context(), "echo", nil, nil)
	if !errors.Is(err, ErrNoBroker) || !strings.Contains(err.Error(), "is the pod's kalpc sidecar running? kubectl logs <pod> -c kalpc-sidecar") {
		t.Errorf("connect with no broker listening = %v; want ErrNoBroker asking whether the sidecar runs", err)
	}
}

// TestInvalidPortNameSaysWhichRule: "invalid connection port name" used
// to end there (Connect added only `want "namespace/name" or "name"`); it
// now says which part breaks which rule.
func TestInvalidPortNameSaysWhichRule(t *testing.T) {
	t.Setenv(EnvSocket, "") // the name is checked before the broker is needed
	const rule = "is not a valid object name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
	for _, tc := range []struct{ port, want string }{
		{"Echo", `port name: "Echo" ` + rule},
		{"demo/echo_1", `port name: "echo_1" ` + rule},
		{"Demo/echo", `namespace: "Demo" ` + rule},
		{"a/b/c", `"a/b/c" has more than one "/": want "namespace/name", or "name" for a port in the pod's own namespace`},
		{"demo/", "port name: empty name"},
		{"/echo", "namespace: empty name"},
		{"demo/" + strings.Repeat("x", ctl.MaxName+1), "port name: name of 254 bytes exceeds 253"},
	} {
		_, err := Connect(t.Context(), tc.port, nil, nil)
		if !errors.Is(err, ErrInvalidPortName) || !strings.HasSuffix(err.Error(), "invalid connection port name: "+tc.want) {
			t.Errorf("Connect(%q) = %v\nwant ErrInvalidPortName ending %q", tc.port, err, tc.want)
		}
	}
	_, err := Publish(t.Context(), "Echo", nil)
	if want := `alpc: publish Echo: invalid connection port name: "Echo" ` + rule; err == nil || err.Error() != want {
		t.Errorf("Publish(Echo) = %v\nwant %s", err, want)
	}
}

// TestBrokerErrorSaysKindOnce: a sidecar that starts its reason with the
// kind of failure (as every sidecar did: "connection port not found:
// connection port not found: no ConnectionPort …") is said once.
func TestBrokerErrorSaysKindOnce(t *testing.T) {
	err := brokerError("connect", "demo/missing", &ctl.Message{Type: ctl.TypeError, Code: ctl.CodePortNotFound,
		Reason: "connection port not found: no ConnectionPort demo/missing"})
	if want := "alpc: connect demo/missing: connection port not found: no ConnectionPort demo/missing"; err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
	err = brokerError("connect", "demo/missing", &ctl.Message{Type: ctl.TypeError, Code: ctl.CodePortNotFound})
	if want := "alpc: connect demo/missing: connection port not found"; err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
}

// TestPolicyLimitSaysPort: a loan or message too large for a limit that
// the port's messagePolicy lowered said only "MaxSectionBytes (…) reached"
// or "maximum message size", sending the user to a Config that cannot
// raise it. It now names the ConnectionPort field; a limit of the
// Config's own does not.
func TestPolicyLimitSaysPort(t *testing.T) {
	checkLeaks(t)
	path, _ := startServer(t, "server")
	base, err := (&Config{}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	brokered := Policy{MaxSectionBytes: 1 << 20, MaxMessageSize: 4 << 20, MaxPendingCalls: 2}.apply(base)
	c, err := Dial(t.Context(), path, nil, &brokered)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	_, err = c.Loan(t.Context(), 2<<20)
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "MaxSectionBytes" || le.Policy != "messagePolicy.maxSectionBytesPerConnection" ||
		!errors.Is(err, ErrTooLarge) ||
		!strings.Contains(err.Error(), "MaxSectionBytes (1048576) reached, limited by the port's messagePolicy.maxSectionBytesPerConnection") {
		t.Errorf("2 MiB loan = %v; want a *LimitError naming messagePolicy.maxSectionBytesPerConnection", err)
	}
	t.Logf("2 MiB loan: %v", err)
	if _, err := c.Call(t.Context(), make([]byte, 2<<20)); err == nil ||
		!strings.Contains(err.Error(), "limited by the port's messagePolicy.maxSectionBytesPerConnection") {
		t.Errorf("2 MiB call = %v; want the port's maxSectionBytesPerConnection named", err)
	}
	_, err = c.Loan(t.Context(), 8<<20)
	if !errors.Is(err, ErrTooLarge) ||
		!strings.Contains(err.Error(), "a 8388608-byte loan exceeds the connection's maximum message size of 4194304 bytes, limited by the port's messagePolicy.maxMessageBytes") {
		t.Errorf("8 MiB loan = %v; want ErrTooLarge naming messagePolicy.maxMessageBytes", err)
	}
	t.Logf("8 MiB loan: %v", err)
	if r, err := c.Call(t.Context(), []byte("echo:still")); err != nil || string(r) != "still" {
		t.Errorf("call after the refusals = %q, %v", r, err)
	}

	// The same limits set in the Config itself are not the port's.
	own := base
	own.MaxSectionBytes, own.MaxMessageSize = 1<<20, 4<<20
	o, err := Dial(t.Context(), path, nil, &own)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	for _, n := range []int{2 << 20, 8 << 20} {
		_, err := o.Loan(t.Context(), n)
		if !errors.Is(err, ErrTooLarge) || strings.Contains(err.Error(), "port") {
			t.Errorf("%d-byte loan with the Config's own limits = %v; want ErrTooLarge not naming a port", n, err)
		}
	}
}

// TestCodeDocs: `go doc ./pkg/alpc` showed "CodeUnknown Code = 1 …" and
// hid the other codes. Each Code constant is now declared on its own with
// its own doc comment (so the package summary lists all of them and `go
// doc alpc.CodeCanceled` explains it), and the type's doc lists them all
// with their meanings.
func TestCodeDocs(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "errors.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	p, err := doc.NewFromFiles(fset, []*ast.File{f}, "github.com/kalpc/kalpc/pkg/alpc")
	if err != nil {
		t.Fatal(err)
	}
	var code *doc.Type
	for _, typ := range p.Types {
		if typ.Name == "Code" {
			code = typ
		}
	}
	if code == nil {
		t.Fatal("no type Code")
	}
	seen := 0
	for _, v := range code.Consts {
		if len(v.Names) != 1 {
			t.Errorf("constants %v are declared as a group; go doc shows only the first", v.Names)
		}
		for _, name := range v.Names {
			seen++
			if !strings.HasPrefix(v.Doc, name+" means") && !strings.HasPrefix(v.Doc, name+" is") {
				t.Errorf("%s's doc comment %q does not say what it means", name, v.Doc)
			}
			if !strings.Contains(code.Doc, " "+name+": ") {
				t.Errorf("type Code's doc does not list %s", name)
			}
		}
	}
	if seen != len(codeNames) {
		t.Errorf("%d Code constants, %d code names", seen, len(codeNames))
	}
}
