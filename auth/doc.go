// Package auth owns metastore's authentication and built-in authorization:
// etcd's users, roles and key-range permissions (the root user and role, the
// auth revision, enable/disable), password hashing, simple and JWT tokens,
// and the Authorizer chain that decides every request.
//
// Layout:
//
//   - Store holds users and roles in lock-free maps. Each user's effective
//     permissions are precomputed into an immutable interval set that is
//     swapped atomically when the user's roles change, so a permission check
//     takes no lock and allocates nothing. Mutations (the etcd Auth RPCs) run
//     on one goroutine, the server's apply loop, and persist through the small
//     Writer interface; Open loads the state back through Reader. The package
//     knows nothing of mvcc: the caller adapts its storage to these interfaces.
//   - Tokens issues and resolves tokens (etcd's "simple" tokens with a sliding
//     TTL, or signed JWTs), validating each against the current state so a
//     token dies with its user's password or deletion but survives unrelated
//     auth changes.
//   - Authorizer is one member of the chain that decides a Request: Allow,
//     Deny or NoOpinion; the first decision wins and an all-NoOpinion chain
//     denies. Store is the built-in RBAC member and ends the default chain.
//
// bcrypt never runs here under a lock or in apply: the server hashes and
// compares passwords on the request's goroutine (HashPassword, CheckPassword).
//
// auth must not import mvcc, lease, wasmhost or server: it declares the
// small interfaces it needs (Reader, Writer, Authorizer) and the server
// adapts storage and policies to them.
package auth
