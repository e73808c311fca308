// Package mvcc is metastore's multi-version key-value store over Pebble.
//
// Every version of every key is kept until compaction, so a read at any
// revision at or above the compacted one sees exactly what a read at that
// revision saw when it was current. Versions of one key sit next to each
// other in Pebble, newest first, so a read at a revision is one seek per key
// and no in-memory index of all keys is needed. A second, revision-ordered
// keyspace (the change log) records which keys changed at each revision; it
// serves watchers catching up from history and drives compaction.
//
// The Hub fans committed revisions out to watchers (etcd's watch
// semantics): the applier publishes each durable batch to it, watchers in
// sync get their events queued on their stream at once, and watchers that
// are behind are caught up by their stream's sender from recent revisions in
// memory or from the change log (Store.History).
//
// Reads (Store.Read, Store.Range) run concurrently from any goroutine. A
// read view is reused by later reads while the store's revision stands still
// (readpool.go), so a caller must not touch a view after ending it.
// Store.ReadPinned is a point-in-time view for reads spread over a long time
// (a range streamed in pieces), holding a Pebble snapshot, not an iterator.
// Writes go through a Batch: the single writer (the applier) opens one,
// runs each request as a WriteTxn that gets the next revision, and commits
// them all with one fsync. A put reads its key's newest version first; a
// key not written since Pebble's tables last caught up is looked up in the
// tables alone, skipping the memtables (recentkeys.go keeps, in memory,
// the set of keys that may be there), and a key written lately not at all:
// latestcache.go remembers its newest version's revisions, version and
// lease, and a put that nobody asked the previous value of (prev_kv, a
// watcher with prev_kv) leaves it out of its event. The package owns no goroutine but
// the background compactor, which Close stops; the hub owns none.
//
// Whole histories move in and out for migration (migrate.go): Export is a
// consistent view that yields every visible version in revision order with
// its sub-revision, Import bulk-loads one into an empty store. HashKV is
// etcd's algorithm over etcd's encoding (etcdformat), so the numbers equal
// an etcd member's with the same history.
//
// mvcc must not import lease, auth, wasmhost, server or a command.
package mvcc
