//go:build !linux || kalpc_stub

package alpc_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kalpc/kalpc/pkg/alpc"
)

// TestUnsupported runs where kalpc cannot (off Linux, or on Linux with
// -tags kalpc_stub, which selects the same stubs): every entry point that
// needs the kernel fails at once with an error that wraps ErrUnsupported
// (errors.ErrUnsupported) and says that kalpc needs Linux.
func TestUnsupported(t *testing.T) {
	ctx := context.Background()
	t.Setenv(alpc.EnvSocket, "") // the platform is reported, not a missing broker
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		call func() error
	}{
		{"Supported", alpc.Supported},
		{"Listen", func() error { _, err := alpc.Listen(dir+"/port", nil); return err }},
		{"Dial", func() error { _, err := alpc.Dial(ctx, dir+"/port", nil, nil); return err }},
		{"FileConn", func() error { _, err := alpc.FileConn(ctx, f, nil); return err }},
		{"SocketPair", func() error { _, _, err := alpc.SocketPair(); return err }},
		{"NewRegion", func() error { _, err := alpc.NewRegion(4096); return err }},
		{"Connect", func() error { _, err := alpc.Connect(ctx, "apps/greeter", nil, nil); return err }},
		{"Publish", func() error { _, err := alpc.Publish(ctx, "greeter", nil); return err }},
	} {
		err := c.call()
		switch {
		case err == nil:
			t.Errorf("%s succeeded, want ErrUnsupported", c.name)
		case !errors.Is(err, alpc.ErrUnsupported) || !errors.Is(err, errors.ErrUnsupported):
			t.Errorf("%s = %v, want an error wrapping ErrUnsupported", c.name, err)
		case !strings.Contains(err.Error(), "kalpc needs Linux"):
			t.Errorf("%s = %q, want it to say kalpc needs Linux", c.name, err)
		}
		if c.name == "Connect" || c.name == "Publish" {
			var be *alpc.BrokerError
			if !errors.As(err, &be) || be.Op != strings.ToLower(c.name) {
				t.Errorf("%s = %#v, want a *BrokerError for op %q", c.name, err, strings.ToLower(c.name))
			}
		}
		t.Logf("%s: %v", c.name, err)
	}
}
