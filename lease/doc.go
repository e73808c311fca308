// Package lease is metastore's lessor: it knows which leases exist, when each
// expires, and renews them on keep-alive.
//
// The lessor holds no durable state of its own and never writes: the
// applier grants, revokes and checkpoints leases in the store and tells the
// lessor once each batch is durable (Grant, Revoke, Checkpointed). What the
// lessor adds is time: an expiry per lease, renewed lock-free by Renew, and
// one goroutine with one timer over a min-heap of deadlines that reports
// expired leases on Expired(), at most RevokeRate per second, for the server
// to propose their revocation through the apply loop (as etcd, apply itself
// never looks at a clock). Checkpoints() gives the remaining TTLs worth
// persisting, so that a restart restores them rather than granting every
// lease its full TTL again.
//
// The package imports nothing else of metastore's; all its times come from
// a Clock, which tests replace with a fake.
package lease
