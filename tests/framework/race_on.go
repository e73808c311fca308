//go:build race

package framework

// raceEnabled reports whether this test binary was built with -race; helper
// binaries are then built with -race too, so that they share the build cache
// with the test binary (and catch data races in the server under test).
const raceEnabled = true
