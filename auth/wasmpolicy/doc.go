// Package wasmpolicy joins the authorization chain of package auth and the
// WebAssembly policies of package wasmhost: Authorizer puts a policy with
// the authorize hook into an auth.Chain, and Admitter runs a policy's admit
// hook on a write. Both match requests by key prefix and, optionally, by
// user or role, encode the auth.Request in the policy ABI's binary layout
// (pooled buffers, no allocation on the hot path), and turn the guest's
// verdict into the chain's answer. In audit mode the verdict is reported and
// the policy has no say.
//
// auth knows nothing of wasmhost; this package is the only one that sees
// both.
//
// It must not import mvcc, lease, server or a command.
package wasmpolicy
