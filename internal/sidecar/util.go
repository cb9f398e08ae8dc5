package sidecar

import (
	"strings"
	"time"
)

var noDeadline time.Time

func toValidUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
