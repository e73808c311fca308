// Package migrate tests migration between etcd and metastore with etcd's
// own tools: a history built by the reference etcd, saved with etcdctl,
// restored by `metastore snapshot restore`, saved again from metastore,
// inspected and restored by etcdutl's snapshot library and served by etcd
// again; every key at every revision, the HashKV at every revision, leases,
// users, roles and a watch resumed from an old revision are compared at
// each hop. See README.md in tests/.
package migrate

import (
	"os"
	"testing"

	"github.com/metastore-dev/metastore/tests/framework"
)

func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }
