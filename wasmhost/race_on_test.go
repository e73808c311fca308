//go:build race

package wasmhost

// timingSlack scales the wall-clock bounds of the containment tests. Under
// the race detector on a busy 2-core machine a guest's host calls and bulk
// operations run several times slower while the deadline stays the same,
// so a call overruns by more; the bounds still catch a guest that is never
// stopped. The tight numbers are reported by runs without -race.
const timingSlack = 4
