//go:build race

package rangestream

// raceEnabled reports whether this test binary was built with -race; the
// metastore binary is then built with -race too, sharing the build cache with
// the other test modules' (and catching data races in the server).
const raceEnabled = true
