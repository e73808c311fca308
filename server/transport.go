package server

import (
	"context"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/serve/h2grpc"
	"github.com/metastore-dev/metastore/server/v3rpc"
)

// newLeanServer is the lean gRPC transport (grpc.transport: lean) with the
// settings v3rpc.Server.NewGRPCServer gives grpc-go's.
//
// A serializable one-key Range runs on the connection's reader
// (v3rpc.InlineCall) only while no policy is loaded: a policy's hook may
// run up to its deadline, or wait for a guest's CPU slot, and the reader
// must not wait (every stream of the connection waits behind it).
//
// A LeaseKeepAlive stream on a single member is answered by the reader
// too (v3rpc.Server.InlineStream): its handler checks for policies itself,
// per message, and hands a message that would wait to a goroutine.
func newLeanServer(cfg *config.Config, t v3rpc.Transport, creds credentials.TransportCredentials, policies func() bool, inlineStream func(string) v3rpc.InlineStream) *h2grpc.Server {
	var deferCall func(ctx context.Context, path string, msg []byte, run func(context.Context)) bool
	if t.DeferRead != nil {
		// As Inline: the round's goroutine runs the calls in turn, and a
		// policy's hook may wait.
		deferCall = func(ctx context.Context, path string, msg []byte, run func(context.Context)) bool {
			return !policies() && t.DeferRead(ctx, path, msg, run)
		}
	}
	return h2grpc.NewServer(h2grpc.Options{
		Codec:                t.Codec,
		UnaryInterceptor:     t.UnaryInterceptor,
		StreamInterceptor:    t.StreamInterceptor,
		MaxRecvMsgSize:       t.MaxRecvMsgSize,
		MaxSendMsgSize:       t.MaxSendMsgSize,
		MaxConcurrentStreams: cfg.GRPC.MaxConcurrentStreams,
		Workers:              cfg.GRPC.StreamWorkers,
		Keepalive: keepalive.ServerParameters{
			Time:                  cfg.GRPC.KeepaliveInterval,
			Timeout:               cfg.GRPC.KeepaliveTimeout,
			MaxConnectionIdle:     cfg.GRPC.MaxConnectionIdle,
			MaxConnectionAge:      cfg.GRPC.MaxConnectionAge,
			MaxConnectionAgeGrace: cfg.GRPC.MaxConnectionAgeGrace,
		},
		Enforcement: keepalive.EnforcementPolicy{MinTime: cfg.GRPC.KeepaliveMinTime},
		Creds:       creds,
		Inline:      inlineCall(policies),
		Defer:       deferCall,
		InlineStream: func(path string) h2grpc.StreamHandler {
			if h := inlineStream(path); h != nil {
				return h
			}
			return nil
		},
	})
}

// inlineCall picks the calls the lean transport runs on the connection's
// reader: v3rpc.InlineCall's, while policies reports none loaded.
func inlineCall(policies func() bool) func(path string, msg []byte) bool {
	return func(path string, msg []byte) bool {
		return !policies() && v3rpc.InlineCall(path, msg)
	}
}
