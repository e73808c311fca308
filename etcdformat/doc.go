// Package etcdformat reads and writes etcd's on-disk database: the bbolt
// file etcd keeps in member/snap/db and streams as a snapshot (`etcdctl
// snapshot save`), with or without the SHA-256 trailer of a saved snapshot.
//
// It owns the knowledge of etcd's storage schema (v3.4 to v3.6): bucket
// names, the revision-key encoding of the key bucket, the meta keys of
// compaction and storage version, and the lease and auth records, which are
// etcd's own protobuf types (go.etcd.io/etcd/api/v3). It also computes etcd's
// HashKV checksum over that encoding (KVHasher), so a store that keeps the
// same history can report the same numbers without being etcd.
//
// It imports nothing of metastore and nothing of etcd's server module: the
// glue that turns a Reader into a metastore data directory, and a metastore
// store into a Writer, lives with the callers (server/v3rpc/etcdmigrate.go).
package etcdformat
