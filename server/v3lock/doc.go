// Package v3lock serves etcd's Lock (v3lockpb.Lock) and Election
// (v3electionpb.Election) services and their JSON gateway routes: the
// algorithms of client/v3/concurrency run inside the member, through the
// member's own KV and Lease services (Deps), as etcd's v3lock and
// v3election do over an in-process client. Their wire types are in
// v3lockpb.
//
// v3lock must not import the member (server), the RPC adapters
// (server/v3rpc) or the transport (server/serve): it gets the services it
// calls as interfaces.
package v3lock
