// Package apply is the one deterministic entry for every change to a
// member's state: Applier.Apply takes a Request (etcd's InternalRaftRequest:
// Put, DeleteRange, Txn, Compaction, lease grant/revoke/checkpoint, auth
// changes, alarms, cluster versions) and applies it into an mvcc.Batch;
// Applier.ApplyConfChange does the same for membership. Given the store's
// state the result is a function of the request alone: no clocks,
// randomness or I/O besides the batch, so a Raft log can carry the requests
// unchanged and every member reaches the same state.
//
// Proposer is the seam callers propose through and wait on. Loop implements
// it on one member with group commit: it takes every queued request, applies
// them into one batch, commits with one fsync, publishes the events, then
// answers each caller. On a cluster member RaftProposer implements it over
// a raftnode.Node, and RaftMachine is the node's StateMachine: the same
// Applier, one unsynced batch per run of committed entries with the
// applied index (the Loop's counter, continued) and the ConfState. It is
// also the node's SnapshotStateMachine: a snapshot's applied index and
// ConfState are read from the snapshot's own data, and after one is
// installed the Applier reloads its members, versions, alarms, tenants'
// counts and auth (snapshot.go).
//
// Per-member derived data, the tenants' usage counts, is kept by Apply from
// each request's changes; a new tenants list is recounted locally on the
// apply goroutine (Loop.SetTenants, RaftMachine.SetTenants between batches),
// never written by a caller.
//
// apply imports mvcc, lease's interface (Lessor, declared here), auth and
// server/raftnode (a library that imports none of ours); it must not import server, its RPC or transport packages, server/config,
// or any command.
package apply
