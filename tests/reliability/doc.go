// Package reliability is metastore's fault and correctness harness: it
// records histories of concurrent clients (puts, gets, compare-and-swap
// txns, deletes, multi-key txns, lease grants, revokes, lease puts,
// keep-alives and TimeToLive, with invoke and return times) and checks
// them with github.com/anishathalye/porcupine against a sequential model of
// etcd's KV and lease semantics that includes revisions, both against a
// steady server and across SIGKILL/restart cycles of the metastore binary.
// A history that is not linearizable fails the test with the path of
// porcupine's HTML visualisation. Watchers on the same runs record every
// response, checked against the history read back from the store's
// revisions (watch.go, watchcheck.go).
//
// The tests run against the reference etcd too (in-process, or its binary
// for the crash cycles), so the model is proven on etcd before it judges
// metastore. Short forms run in `make test`; METASTORE_SOAK=1 (`make soak`)
// runs the long ones. See README.md in tests/.
package reliability
