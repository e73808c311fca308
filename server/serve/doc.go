// Package serve is the member's client transport: it binds the client and
// metrics listeners (TLS with certificate rotation, connection limits),
// splits each client port between gRPC and HTTP with cmux (over TLS, h2
// by content type), and serves etcd's plain-HTTP endpoints (/health,
// /livez, /readyz, /version, /metrics) and the JSON gateway behind etcd's
// access controller. The gRPC servers, their services and the handlers'
// answers come from the member through Options; a gRPC server is grpc-go's
// or the lean transport of server/serve/h2grpc (grpc.transport).
//
// serve must not import the member (server), the RPC adapters
// (server/v3rpc) or Lock/Election (server/v3lock), nor the guard or apply.
package serve
