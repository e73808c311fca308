// Package wasmhost runs metastore's WebAssembly policies: it owns the wazero
// runtimes, the on-disk compilation cache, the warm instance pools, the
// limits that contain a hostile guest, and policy ABI v1 (docs/policy-abi.md):
// the compact binary request layout and the verdict, reason and mutation a
// guest returns.
//
// A Host is shared by every policy of a server. Host.Load compiles, checks
// and initialises one policy; Policy.Authorize and Policy.Admit make one
// guest call each and return a Decision. A guest that traps, runs past its
// deadline, exhausts its memory or returns garbage never takes the caller
// down: the instance is thrown away and the Decision carries the policy's
// on_error verdict. The server reloads a changed policy by loading it as a
// new Policy beside the old one and swapping whole policy generations
// (server/guard), so that a request never sees half of a reload;
// Policy.Reload, which swaps a module inside one Policy, is for embedders
// holding a single policy. A module that fails to load leaves the old one
// serving, and a load that does not finish in time is abandoned.
//
// Every path of a call has a deadline: guest code is metered (fuel
// check-ins), the start function and init run under the init deadline, and
// the host's own wasi_snapshot_preview1 (wasi.go) charges work that grows
// with an argument by size. Guests that run past one fuel quantum share
// GOMAXPROCS−1 CPU slots over the whole host (cpu.go), calls of a policy
// that keeps running to its deadline last, so that requests calling no
// policy always find a P. A DENY is final once returned, whatever its
// reason; auth/wasmpolicy keeps mutations in their lane.
//
// wasmhost imports no other package of metastore but internal/policyabi,
// the ABI's numbers it shares with auth and the SDK. It reports what happens
// through Events, a struct of optional callbacks, and Policy.Stats; the
// server turns those into Prometheus metrics and log lines.
package wasmhost
