// Command etcdctl is etcd 3.5's etcdctl (v3 API only), built from its Go
// module so that tests/migrate saves the 3.5 server's snapshot with the
// client of the same release.
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
