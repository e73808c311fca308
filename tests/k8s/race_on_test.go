//go:build race

package k8s

// raceEnabled: the metastore binary is then built with -race too, so the
// server under test is checked for data races as well.
const raceEnabled = true
