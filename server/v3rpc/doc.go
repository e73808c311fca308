// Package v3rpc is etcd's gRPC API as thin adapters over a member's parts
// (Member): the KV (with etcd 3.7's RangeStream), Watch, Lease, Cluster,
// Maintenance and Auth services, request validation, the one table that
// maps domain errors to etcd's rpctypes errors (toGRPCError), the
// interceptors (metrics, slow-request log, panic recovery, rate limits),
// the codec and the member's Prometheus metrics; etcd's space quota and
// the send limit (max_send_msg_size) are checked here, and etcd-format
// snapshots are written and restored here (etcdmigrate.go).
//
// Each handler is a straight line: validate the request, ask the guard
// (server/guard) — guard.Write for a mutation, guard.Read for a read —,
// propose through apply.Proposer or read a store view, answer with the
// member's header. A write the applier refuses because auth changed under
// it (apply.ErrAuthRetry), and a read during which auth moved, go through
// the guard again.
//
// On a cluster member (Member.Raft set; raft.go) linearizable reads first
// wait for a ReadIndex round, WithRequireLeader is honoured, Status and
// MoveLeader come from the Raft node, a learner serves only what etcd's
// does, and lease keep-alive, TimeToLive and learner promotion on a
// follower go to the leader (LeaderForwarder).
//
// v3rpc must not import the member (server), the transport (server/serve)
// or Lock and Election (server/v3lock), nor any command.
package v3rpc
