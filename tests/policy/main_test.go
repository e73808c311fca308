// Package policy tests WebAssembly policies end to end: a metastore with
// policies configured, driven by etcd's own client — authorization in the
// chain before RBAC, admission with denial reasons and mutations, hostile
// guests contained, reload, start-up errors and metrics.
package policy

import (
	"os"
	"testing"

	"github.com/metastore-dev/metastore/tests/framework"
	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

func TestMain(m *testing.M) {
	code := framework.Main(m)
	wasmtest.Cleanup()
	os.Exit(code)
}
