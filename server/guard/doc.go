// Package guard decides whether a request may proceed, before it is read or
// proposed: who is calling (token or client certificate), the policy
// generation a request holds, authorization through the Authorizer chain,
// admission (which may rewrite a write), the rate buckets (global, per
// user, unary calls, stream and watch creations; a reload changes them),
// the tenants' rate limits and quotas, and the one description of a request as the key ranges it is
// authorized on (Describe), which `metastore policy eval` uses too.
//
// It answers with domain errors (auth's, apply's, *wasmpolicy.DenyError,
// the tenant errors here); the RPC layer maps them to etcd's wire errors
// with its one table. It must not import the RPC, transport or member
// packages (server, server/v3rpc, server/serve, server/v3lock) nor any
// command.
package guard
