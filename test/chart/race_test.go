//go:build race

package chart_test

// raceEnabled says the test binary has the race detector: the operator is
// then built with it too, which reuses the packages `go test -race` compiled.
const raceEnabled = true
