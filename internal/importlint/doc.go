// Package importlint holds a test that keeps the package layout of DESIGN.md
// honest: imports go one way (cmd → server → {apply, mvcc, lease, auth,
// wasmhost}), and the etcd server module never reaches the binary.
package importlint
