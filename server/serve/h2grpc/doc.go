// Package h2grpc is a gRPC server transport over HTTP/2 built for a low
// CPU cost per call. It serves the same grpc.ServiceDesc registrations as a
// grpc.Server (it is a grpc.ServiceRegistrar), with the server's codec and
// interceptors, so every service works through either transport.
//
// Per connection it runs one reader goroutine; calls run on a shared pool
// of worker goroutines, or on the reader for calls Options.Inline picks
// (short ones that never wait: inline.go), and the messages of streams
// Options.InlineStream picks are answered there too (inlinestream.go); responses from all of a connection's streams are
// encoded into one buffer that whoever finds no write in progress flushes
// (a handler inline, or the connection's writer goroutine for frames the
// reader sends), so concurrent responses share a write. A call's context
// is held in its stream (callctx.go), and a header block a client repeats
// is parsed once (hcache.go). Framing and HPACK are golang.org/x/net/http2's. The wire behaviour a client sees (status,
// messages, limits, keepalive enforcement, GOAWAY) follows grpc-go's server.
package h2grpc
