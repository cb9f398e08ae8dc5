//go:build !race

package chart_test

// raceEnabled says the test binary has the race detector.
const raceEnabled = false
