package ctl

import (
	"bytes"
	"os"
	"testing"
)

// unixRights is the SCM_RIGHTS control message carrying f's descriptor.
func unixRights(f *os.File) []byte {
	b, _ := rights(f)
	return b
}

// FuzzDecode checks that Decode never panics, and that whatever it accepts
// re-encodes to the same bytes (the format has exactly one encoding).
func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Encode(m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v (%+v)", err, m)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", b, again)
		}
	})
}
