// Package e2e drives metastore from outside: the real etcdctl against
// metastore and etcd side by side, and crash/restart of the metastore
// binary. See README.md in tests/.
package e2e

import (
	"os"
	"testing"

	"github.com/metastore-dev/metastore/tests/framework"
)

func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }
