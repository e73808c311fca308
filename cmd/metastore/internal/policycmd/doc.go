// Package policycmd implements `metastore policy eval` and `metastore policy
// bench`: run a policy module against sample requests written in YAML,
// without a server, and print the verdict, reason and mutation; or time it.
//
// A request file holds one request or a list of them:
//
//	hook: admit                  # authorize (default without a message) or admit
//	op: put                      # range, put, delete_range, txn, watch, lease_revoke, compact, admin
//	user: alice
//	roles: [dev]
//	tenant: {name: team-a, keys: 10, bytes: 2048}
//	put: {key: /apps/a, value: '{"name":"a"}'}
//
// Instead of put, a request may carry delete_range {key, range_end}, txn
// {compare, success, failure}, range {key, range_end, revision, ...} or
// lease_revoke {id} (see Request), or explicit ranges
// [{perm: read|write, key, end, prefix: true}] for an authorization.
// lease_keys {ID: [keys]} states the keys attached to leases. When ranges
// are not given they are derived from the message by guard.Describe, the
// very function the server authorizes with, so eval answers as the server.
//
// Being under cmd/metastore/internal, no library package can import it.
package policycmd
