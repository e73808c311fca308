// Command etcd is etcd 3.5's server (go.etcd.io/etcd/server/v3 etcdmain),
// built from its Go module so that tests/migrate can restore a snapshot
// written by a real etcd 3.5 into metastore.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
