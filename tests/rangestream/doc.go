// Package rangestream tests metastore's KV.RangeStream with etcd 3.7's own
// client and against an embedded etcd 3.7 server.
//
// It is a module of its own because etcd 3.7's API module (protobuf-go
// types) cannot share a build with the 3.6 API module (gogo types) that
// metastore and the main compatibility tests are built on; so metastore runs
// here as a subprocess, built from the repository root. `make test` runs it.
package rangestream
