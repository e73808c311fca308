package server

import (
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/serve/h2grpc"
	"github.com/metastore-dev/metastore/server/v3rpc"
)

// newLeanServer is the lean gRPC transport (grpc.transport: lean) with the
// settings v3rpc.Server.NewGRPCServer gives grpc-go's.
func newLeanServer(cfg *config.Config, t v3rpc.Transport, creds credentials.TransportCredentials) *h2grpc.Server {
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
		Inline:      v3rpc.InlineCall,
	})
}
