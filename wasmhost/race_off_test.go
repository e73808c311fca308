//go:build !race

package wasmhost

// timingSlack: see race_on_test.go.
const timingSlack = 1
