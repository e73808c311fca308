package server

import (
	"testing"

	"github.com/metastore-dev/metastore/server/config"
)

// BenchmarkTransport compares the client port's two gRPC transports
// (grpc.transport) on etcd's `benchmark range --consistency s` and
// `benchmark put` shapes: 100 callers on 10 connections, over loopback,
// client in-process. Compare cpu-ns/op (client and server together; the
// client is the same for both).
func BenchmarkTransport(b *testing.B) {
	for _, tr := range []string{config.TransportGRPCGo, config.TransportLean} {
		use := func(c *config.Config) { c.GRPC.Transport = tr }
		b.Run("transport="+tr+"/range-100c", func(b *testing.B) { benchGRPCRange(b, false, true, use) })
		b.Run("transport="+tr+"/put-100c", func(b *testing.B) { benchGRPCPut(b, false, 100, use) })
	}
}
