// Package raftnode is a member of a Raft group on go.etcd.io/raft/v3, usable
// as a library without the server: the durable log, the ready loop, the peer
// transport, and etcd's member and cluster IDs.
//
// What it owns:
//
//   - LogStore: raft's Storage in Pebble under its own key prefix (shared
//     with the store's database, so one synced batch per Ready makes the
//     entries and HardState durable, and covers the state machine's
//     unsynced apply batches written before it).
//   - Node: a raft.RawNode behind a mutex, driven by one ready loop that
//     persists each Ready, sends (a leader in parallel with its write,
//     others after it) and hands committed entries — only ones durable on
//     this member — to a StateMachine on an apply goroutine. Propose waits
//     in a registry keyed by request ID until this member applies the
//     entry; ReadIndex batches concurrent linearizable reads into shared
//     rounds (a leader checks a round's quorum itself, with raft's
//     heartbeat messages, off the ready loop: readprobe.go) and waits for
//     the apply; membership changes are raft
//     ConfChanges validated by the state machine at apply. A watchdog
//     goroutine of its own expires proposals past their request timeout
//     and warns, naming the stage, when the ready loop or the apply
//     goroutine stays in one for long (watchdog.go).
//   - PeerTransport: a gRPC peer service, one stream per peer fed by a
//     bounded queue (full: drop and report unreachable), cluster and member
//     IDs checked on every stream, TLS from the caller. The sender writes
//     the stream's HTTP/2 frames itself (peerclient.go); the server side is
//     any grpc.ServiceRegistrar using PeerCodec (the member serves it with
//     the lean transport, h2grpc).
//   - MemberID, ClusterID: etcd's derivations, so member lists match etcd's.
//   - Log truncation (Config.SnapshotCount) and snapshots: SnapshotStore
//     sends the state machine's data (everything in the shared Pebble
//     database but the log) from a Pebble snapshot over a peer stream of
//     its own with a SHA-256, stages it into sstables on the receiver and
//     installs it with one atomic ingest that also resets the log.
//
// What it does not own: the state machine (the server's apply package
// implements StateMachine and SnapshotStateMachine), membership records
// and their validation, and what a member derives from its store.
package raftnode
