//go:build upstreamdeps

// This file is never built: it keeps etcd's tests module (whose
// tests/common package the Makefile runs with go test) in go.mod and its
// checksums in go.sum, which go mod tidy would otherwise drop because no
// package of ours imports it.
package main

import _ "go.etcd.io/etcd/tests/v3/common"
