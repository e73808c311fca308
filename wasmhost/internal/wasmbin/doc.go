// Package wasmbin reads, rewrites and writes WebAssembly binaries at the
// section level: enough to validate a policy's imports before wazero sees
// it, to add the interrupt checks that let the host stop a guest that runs
// past its deadline, and to build the tiny modules that the hostile-guest
// fixtures need. It is not a general-purpose toolkit: code is decoded only to
// find instruction boundaries.
package wasmbin
