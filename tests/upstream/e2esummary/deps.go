//go:build upstreamdeps

// This file is never built. It keeps etcd's tests module, whose test
// packages make test-upstream runs with go test (tests/common, and
// tests/e2e with UPSTREAM_PKG=e2e), in go.mod, and the modules only those
// packages' tests import (client/v2, porcupine) in go.sum: go mod tidy
// drops whatever no package of ours imports, and the tests of a
// dependency do not count.
package main

import (
	_ "github.com/anishathalye/porcupine"
	_ "go.etcd.io/etcd/client/v2"
	_ "go.etcd.io/etcd/tests/v3/common"
	_ "go.etcd.io/etcd/tests/v3/e2e"
)
