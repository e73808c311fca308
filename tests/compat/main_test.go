// Package compat runs the same KV scenarios against a reference etcd and
// metastore and requires identical results. See README.md in tests/.
package compat

import (
	"os"
	"testing"

	"github.com/metastore-dev/metastore/tests/framework"
)

func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }
