//go:build linux && !kalpc_stub

package alpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"syscall"
	"testing"
)

// statsVerb asks the payload-echo server for its resource usage: the reply
// is its minor page faults, then its voluntary context switches.
const statsVerb = "\x00stats"

// helperPayloadServer is helperServer with the default path's handler: the
// handler takes its copy with Request.Payload and replies with it (an echo,
// what an application written from the docs does).
func helperPayloadServer(path string) error {
	return helperServer(path, &Config{Handler: HandlerFunc(func(_ context.Context, req *Request) ([]byte, error) {
		p := req.Payload()
		if string(p) == statsVerb {
			return rusage(), nil
		}
		return p, nil
	})})
}

func rusage() []byte {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	b := binary.LittleEndian.AppendUint64(nil, uint64(ru.Minflt))
	return binary.LittleEndian.AppendUint64(b, uint64(ru.Nvcsw))
}

// TestLargeCallPayloadReusesSections runs the default path (Call, and a
// handler that takes Request.Payload and echoes it) many times at sizes that
// need a section: every reply is the request, a copy the caller may keep
// and change; the sections are created once and reused (what this process
// holds stays bounded instead of growing per call); and closing the
// connection gives back every mapping, byte and descriptor.
func TestLargeCallPayloadReusesSections(t *testing.T) {
	checkLeaks(t)
	before := GetProcessUsage()
	path, _ := startServer(t, "server-payload")
	c, err := Dial(t.Context(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kept [][]byte
	for i := range 40 {
		size := []int{64 << 10, 1 << 20, 3<<20 + 17}[i%3]
		req := pattern(size)
		req[i] = byte(i)
		out, err := c.Call(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, req) {
			t.Fatalf("call %d: reply of %d bytes differs from the request", i, len(out))
		}
		out[0] ^= 0xff // the caller's own copy
		kept = append(kept, out)
		u := GetProcessUsage()
		// Our sections: 4 MiB each, at most two in use by one call at a
		// time (request, and the peer's reply mapped here).
		if u.SectionMemory-before.SectionMemory > 8<<20 || u.Mappings-before.Mappings > 4 {
			t.Fatalf("call %d: %d mappings and %d bytes of sections held: sections are not reused", i, u.Mappings-before.Mappings, u.SectionMemory-before.SectionMemory)
		}
	}
	for i, out := range kept {
		size := []int{64 << 10, 1 << 20, 3<<20 + 17}[i%3]
		want := pattern(size)
		want[i] = byte(i)
		want[0] ^= 0xff
		if !bytes.Equal(out, want) {
			t.Fatalf("reply %d changed after it was returned", i)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if u := GetProcessUsage(); u != before {
		t.Fatalf("after Close: usage %+v, want %+v", u, before)
	}
}
