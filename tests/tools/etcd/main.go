// Command etcd is the reference etcd server, built from its Go module for
// side-by-side benchmarks.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
