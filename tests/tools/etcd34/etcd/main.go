// Command etcd is etcd 3.4's server (go.etcd.io/etcd etcdmain), built from
// its Go module so that tests/migrate can restore a snapshot written by a
// real etcd 3.4 into metastore.
package main

import "go.etcd.io/etcd/etcdmain"

func main() { etcdmain.Main() }
