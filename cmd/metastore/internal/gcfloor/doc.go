// Package gcfloor tunes the Go garbage collector of the metastore process:
// while the server allocates quickly it keeps a floor of headroom above the
// live heap, so a small live heap does not make the collector run many
// times a second, and it drops that floor when allocation stops or memory
// is tight, so idle garbage is returned to the operating system.
//
// Pebble keeps its block cache and memtables outside the Go heap, so the
// live heap is often a few MiB; with Go's default GOGC=100 the collector
// then ran every few hundred requests. A fixed 64 MiB ballast fixed that
// but also raised the heap goal by twice its size where the live heap was
// large (10,000 watchers: peak RSS 314 MiB against 169 MiB without it) and
// kept up to 64 MiB of garbage resident when idle. The Tuner instead sets
// GOGC (debug.SetGCPercent) after every collection and a few times a second
// so that the heap goal is
//
//	live + max(live×GOGC/100, min(MaxFloor, allocation rate × Spacing))
//
// limited, when GOMEMLIMIT (debug.SetMemoryLimit) is set, to half the
// limit; and once the process goes idle it returns the memory above the
// live heap to the OS (see Tuner). The process owns one Tuner at most; main
// starts it unless the operator set GOGC.
package gcfloor
