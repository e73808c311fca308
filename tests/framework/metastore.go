package framework

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/server"
	"github.com/metastore-dev/metastore/server/config"
)

// StartMetastore starts metastore in-process (server.New on a temporary data
// directory, a free loopback port, Run in a goroutine) and stops it on
// cleanup. The server's log is printed if the test failed.
func StartMetastore(t testing.TB, o Options) *Server {
	t.Helper()
	cfg := config.Default()
	cfg.Name = "default"
	cfg.DataDir = t.TempDir()
	cfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
	if o.MaxTxnOps > 0 {
		cfg.Limits.MaxTxnOps = o.MaxTxnOps
	}
	if o.AuthToken != "" {
		cfg.Auth.Token = o.AuthToken
	}
	if o.AuthTokenTTL > 0 {
		cfg.Auth.TokenTTL = o.AuthTokenTTL
	}
	cfg.Auth.BcryptCost = o.bcryptCost()
	if o.MaxRequestBytes > 0 {
		cfg.Limits.MaxRequestBytes = o.MaxRequestBytes
	}
	if o.WatchProgressNotifyInterval > 0 {
		cfg.Watch.ProgressNotifyInterval = o.WatchProgressNotifyInterval
	}
	cfg.Server.EnableGRPCGateway = !o.DisableGRPCGateway
	if o.QuotaBackendBytes > 0 {
		cfg.Limits.QuotaBackendBytes = o.QuotaBackendBytes
	}
	cfg.Cluster.StrictReconfigCheck = !o.NoStrictReconfigCheck
	logs := &syncBuffer{}
	lg := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := server.New(cfg, lg)
	if err != nil {
		t.Fatalf("metastore: server.New: %v", err)
	}
	addrs := s.ClientAddrs()
	if len(addrs) == 0 {
		t.Fatalf("metastore: ClientAddrs is empty after New")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		done <- s.Run(ctx)
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && err != context.Canceled && !strings.Contains(err.Error(), "context canceled") {
				t.Errorf("metastore: Run returned %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("metastore: Run did not return within 30s of cancellation")
		}
		if t.Failed() {
			t.Logf("metastore log (tail):\n%s", tail(logs.String(), 8000))
		}
	})
	srv := &Server{Kind: "metastore", Name: cfg.Name, Endpoint: addrs[0], DataDir: cfg.DataDir}
	if err := waitReady(srv.Endpoint, 30*time.Second, exited); err != nil {
		t.Fatalf("metastore: %v", err)
	}
	return srv
}
