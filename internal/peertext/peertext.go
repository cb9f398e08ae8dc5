// Package peertext makes text a peer sent (a rejection's reason, a
// broker's explanation) safe to pass on: valid UTF-8, so that a truncated
// rune or bytes meant to corrupt logs or JSON never travel further, and
// bounded in length. pkg/alpc and the sidecar share it.
package peertext

import (
	"strings"
	"unicode/utf8"
)

// Clean returns s with every invalid UTF-8 sequence replaced by U+FFFD.
func Clean(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// Truncate returns s as valid UTF-8 of at most max bytes: cut to max,
// invalid bytes (a rune the cut split, or bytes invalid to begin with)
// replaced, then whole runes trimmed while the replacements made it longer.
func Truncate(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	s = Clean(s)
	for len(s) > max {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}
