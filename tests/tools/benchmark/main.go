// Command benchmark is etcd's own benchmark tool (tools/benchmark in the
// go.etcd.io/etcd/v3 module), built from its Go module so that metastore and a
// reference etcd can be measured with exactly the same load generator.
//
// It lives in its own Go module because go.etcd.io/etcd/v3 at the version of
// the etcd server used by the tests module is not served by the module proxy;
// this module pins a served go.etcd.io/etcd/v3 release together with the
// matching pkg, client and api modules (see go.mod).
package main

import (
	"fmt"
	"os"

	"go.etcd.io/etcd/v3/tools/benchmark/cmd"
)

func main() {
	if err := cmd.RootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
