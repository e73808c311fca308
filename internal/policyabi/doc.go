// Package policyabi holds the numbers of policy ABI v1 (docs/policy-abi.md)
// that more than one side of the ABI speaks: the request's op byte, its
// flags, a range's permission byte and an admission's message kind. auth
// (which builds requests), wasmhost (which encodes them for a guest) and the
// Go SDK policies/policy (which decodes them inside the guest) all alias
// these, so the three cannot drift and no value is cast between copies.
//
// It imports nothing: the SDK compiles it into every guest, and wasmhost
// and auth, which may not import each other, both depend on it.
package policyabi
