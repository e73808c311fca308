package framework

import (
	"net/url"
	"os"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// StartEtcd starts a single-member reference etcd in-process on loopback
// ports with a temporary data directory; it is closed on cleanup.
func StartEtcd(t testing.TB, o Options) *Server {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ { // ports picked by FreePort may be taken meanwhile
		s, err := startEtcd(t, o)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("starting etcd: %v", lastErr)
	return nil
}

func startEtcd(t testing.TB, o Options) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Name = "default"
	cfg.Dir = t.TempDir()
	cu, _ := url.Parse(localURL(FreePort(t)))
	pu, _ := url.Parse(localURL(FreePort(t)))
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	lg := zap.NewNop()
	if os.Getenv("METASTORE_TEST_ETCD_LOG") != "" { // debugging aid: etcd's warnings and errors to stderr
		if l, err := zap.NewDevelopment(zap.IncreaseLevel(zap.WarnLevel)); err == nil {
			lg = l
		}
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	cfg.UnsafeNoFsync = true // a reference for semantics; durability is not under test here
	if o.MaxTxnOps > 0 {
		cfg.MaxTxnOps = uint(o.MaxTxnOps)
	}
	if o.AuthToken != "" {
		cfg.AuthToken = o.AuthToken
	}
	if o.AuthTokenTTL > 0 {
		cfg.AuthTokenTTL = uint(o.AuthTokenTTL / time.Second)
	}
	cfg.BcryptCost = uint(o.bcryptCost())
	if o.MaxRequestBytes > 0 {
		cfg.MaxRequestBytes = uint(o.MaxRequestBytes)
	}
	if o.WatchProgressNotifyInterval > 0 {
		cfg.WatchProgressNotifyInterval = o.WatchProgressNotifyInterval
	}
	cfg.EnableGRPCGateway = !o.DisableGRPCGateway
	cfg.QuotaBackendBytes = o.QuotaBackendBytes
	cfg.StrictReconfigCheck = !o.NoStrictReconfigCheck
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		e.Close()
		t.Fatalf("etcd not ready after 60s")
	}
	t.Cleanup(e.Close)
	s := &Server{Kind: "etcd", Name: cfg.Name, Endpoint: cu.Host, DataDir: cfg.Dir}
	if err := waitReady(s.Endpoint, 30*time.Second, nil); err != nil {
		t.Fatalf("etcd: %v", err)
	}
	return s, nil
}
