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

// Metastore is an in-process metastore started with a custom configuration.
type Metastore struct {
	*Server
	// Srv is the running server.
	Srv *server.Server
	// Config is the configuration it was started with.
	Config *config.Config
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// StartMetastoreConfig starts metastore in-process like StartMetastore, with
// configure applied to the defaults (temporary data dir, a free loopback
// port) first. It does not probe the server (a TLS server needs a TLS
// client): the listeners are bound when it returns, so clients may connect at
// once.
func StartMetastoreConfig(t testing.TB, configure func(*config.Config)) *Metastore {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
	if configure != nil {
		configure(cfg)
	}
	return startMetastore(t, cfg, nil)
}

// StartMetastoreArgs starts metastore in-process configured as the command
// is, from command-line args and environment (config.Load), with the
// command's reloader: Reload and the file watcher re-read the same args and
// environment, as SIGHUP does for the command. args should name a data dir
// and a loopback port (--data-dir, --listen-client-urls http://127.0.0.1:0).
func StartMetastoreArgs(t testing.TB, args, env []string) *Metastore {
	t.Helper()
	cfg, _, err := config.Load(args, env)
	if err != nil {
		t.Fatalf("metastore: config: %v", err)
	}
	return startMetastore(t, cfg, func() (*config.Config, error) {
		c, _, err := config.Load(args, env)
		return c, err
	})
}

func startMetastore(t testing.TB, cfg *config.Config, reloader func() (*config.Config, error)) *Metastore {
	t.Helper()
	logs := &syncBuffer{}
	lg := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := server.New(cfg, lg)
	if err != nil {
		t.Fatalf("metastore: server.New: %v", err)
	}
	if reloader != nil {
		s.SetConfigReloader(reloader)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Metastore{
		Server: &Server{Kind: "metastore", Name: cfg.Name, Endpoint: s.ClientAddrs()[0], DataDir: cfg.DataDir},
		Srv:    s, Config: cfg, logs: logs, cancel: cancel, done: make(chan error, 1),
	}
	go func() { m.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		if err := m.Stop(); err != nil {
			t.Errorf("metastore: %v", err)
		}
		if t.Failed() {
			t.Logf("metastore log (tail):\n%s", tail(logs.String(), 8000))
		}
	})
	return m
}

// Stop cancels Run and waits for the graceful shutdown; later calls return nil.
func (m *Metastore) Stop() error {
	m.cancel()
	select {
	case err, ok := <-m.done:
		if !ok {
			return nil
		}
		close(m.done)
		if err != nil && !strings.Contains(err.Error(), "context canceled") {
			return err
		}
		return nil
	case <-time.After(30 * time.Second):
		return context.DeadlineExceeded
	}
}

// Log returns the server's log so far.
func (m *Metastore) Log() string { return m.logs.String() }
