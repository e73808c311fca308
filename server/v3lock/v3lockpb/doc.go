// Package v3lockpb holds the wire types of etcd's two concurrency
// services, v3lockpb.Lock and v3electionpb.Election: their messages, gRPC
// service descriptors, server interfaces and the small clients the JSON
// gateway calls them through.
//
// etcd generates these from v3lock.proto and v3election.proto into packages
// of its server module (go.etcd.io/etcd/server/v3/...), which must stay out
// of the metastore binary. The messages here are written by hand with the
// same field numbers, types and names, so they encode to the same bytes
// (protowire, fields in number order, zero values omitted) and to the same
// JSON (protobuf-go reads the struct tags, as it does for etcd's gogo
// messages); services and methods carry etcd's full names, so etcd's own
// generated clients talk to metastore unchanged.
//
// It imports no other package of metastore.
package v3lockpb
