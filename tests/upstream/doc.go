// Package upstream holds no tests of its own: this module pins etcd's
// tests module (go.etcd.io/etcd/tests/v3) so that make test-upstream can
// run etcd's e2e suite (its tests/common package, built with the e2e tag)
// straight from the module cache against a bin-dir holding metastore as
// etcd, and against etcd's own binaries built from the same modules. The
// e2esummary command turns both runs into the report in tests/README.md.
package upstream
