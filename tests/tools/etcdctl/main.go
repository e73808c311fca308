// Command etcdctl is etcd's own etcdctl, built from its Go module so that
// compatibility tests and benchmarks drive metastore with the real client.
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
