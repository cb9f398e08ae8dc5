package peertext

import (
	"testing"
	"unicode/utf8"
)

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"":             "",
		"plain":        "plain",
		"é ok":         "é ok",
		"a\xffb":       "a\uFFFDb",
		"\xff\xfe\xfd": "\uFFFD",
		"cut \xc3":     "cut \uFFFD",
	} {
		if got := Clean(in); got != want {
			t.Errorf("Clean(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 3, "hel"},
		{"aé", 2, "a"},                // the cut splits é: replacing it would not fit
		{"abcé", 4, "abc"},            // likewise
		{"a\xffb", 10, "a\uFFFDb"},    // invalid byte replaced
		{"\xff\xff\xff", 3, "\uFFFD"}, // a run of invalid bytes: one replacement
		{"\xff", 2, ""},               // the replacement alone does not fit
	} {
		if got := Truncate(tc.in, tc.max); got != tc.want || len(got) > tc.max || !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d) = %q; want %q", tc.in, tc.max, got, tc.want)
		}
	}
}
