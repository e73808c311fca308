// Package cluster runs multi-member clusters as processes on loopback and
// checks what a replicated etcd must guarantee across member failures:
// every acknowledged write survives SIGKILLs of the leader and of a
// follower, txns are all-or-nothing, revisions never go back, members
// converge to the same history and HashKV; porcupine and the watch
// checkers of tests/reliability across leader changes; a network
// partition of the peer traffic (the minority neither writes nor serves
// linearizable reads, the majority goes on, the healed member catches up);
// etcdctl's cluster commands; with the log truncated (a small
// --snapshot-count), members that come back after a kill or a partition,
// new members and learners on a loaded cluster catch up by a snapshot
// (counted by etcd's etcd_network_snapshot_receive_success) and converge.
//
// The harness (harness.go) starts N members of a binary with etcd's own
// clustering flags, so the same code runs a 3-member etcd (built from its Go
// module, tests/tools/etcd) and a 3-member metastore side by side: every
// test runs against etcd first, to prove its expectations, then against
// metastore. Peer traffic can be routed through fault-injecting proxies
// (proxy.go) that know which member opened each connection, so a partition
// cuts exactly the member pairs it names.
package cluster
