// Package policy is the Go SDK for metastore policies: a policy is a plain Go
// main package that registers handlers in init() and is built with the
// standard toolchain:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o my.wasm ./mypolicy
//
// The SDK owns every export of policy ABI v1 (docs/policy-abi.md):
// metastore_policy_v1, policy_buffer, policy_init, policy_authorize,
// policy_admit, policy_reason and policy_mutation. Handlers see the request
// through zero-copy views of the host's buffer (valid only during the call;
// copy what you keep), get etcd's range conventions right through Range's
// helpers, and decode the admission protobufs (PutRequest,
// DeleteRangeRequest, TxnRequest) without generated code.
//
// A c-shared reactor runs package init functions from _initialize, not
// main, so registration belongs in init(); main stays empty.
//
// Outside wasip1 the same handlers run natively: RunInit, RunAuthorize and
// RunAdmit take an encoded request and go through the same decoding as the
// wasm exports, and package policytest builds requests, so `go test`
// exercises a policy without a WebAssembly runtime.
//
// The SDK is compiled into every guest: it imports only the ABI's numbers
// (internal/policyabi), never the server, the host or their dependencies.
package policy
