// Package server is one metastore member: it opens the data directory and
// wires the parts — storage (mvcc), the lessor, the auth store, the
// applier and its group-commit loop (server/apply, behind apply.Proposer),
// the request guard (server/guard), etcd's gRPC services (server/v3rpc),
// Lock and Election (server/v3lock) and the client transport
// (server/serve) — then runs them: New binds the listeners, Run serves
// until its context ends and shuts down in order (stop accepting, drain,
// stop the background loops, checkpoint leases, close storage).
//
// What is per member and runs beside the requests lives here: the
// background loops (lease expiry and checkpoints, the NOSPACE quota
// monitor, auto-compaction, the cluster version monitor, the policy file
// watcher), /health and /version, and the member's ids.
//
// A member with peer settings (config.ClusterMode) is a cluster member
// (cluster.go): a Raft node (server/raftnode) over the same store and
// applier replaces the loop, behind apply.RaftProposer; it listens for
// peers (raftnode's message stream plus the member's own peer service,
// peer.go: join, and the lease and promotion requests a follower forwards
// to the leader), derives its IDs as etcd does, publishes its name and
// client URLs, and runs lease expiry, checkpoints, auto-compaction and the
// version monitor only while it leads. When a Raft snapshot replaces its
// store (snapshot.go), it rebuilds its leases and resyncs its watchers.
//
// Imports go one way: cmd → server → {serve, v3rpc, v3lock} → {guard,
// apply/raftnode} → {mvcc, lease, auth, wasmhost}; internal/importlint enforces it.
// server must not import any command (cmd/...).
package server
