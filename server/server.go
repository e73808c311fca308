package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	gwruntime "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/lease"
	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/guard"
	"github.com/metastore-dev/metastore/server/raftnode"
	"github.com/metastore-dev/metastore/server/serve"
	"github.com/metastore-dev/metastore/server/serve/h2grpc"
	"github.com/metastore-dev/metastore/server/v3lock"
	"github.com/metastore-dev/metastore/server/v3rpc"
)

// EtcdVersion is the etcd version metastore reports in Status. Clients such
// as kube-apiserver enable features by it.
const EtcdVersion = v3rpc.EtcdVersion

// Server is one metastore member: storage, the apply loop and the gRPC API.
type Server struct {
	cfg *config.Config
	lg  *slog.Logger

	store   *mvcc.Store
	hub     *mvcc.Hub
	applier *apply.Applier
	loop    *apply.Loop // a single member's; nil for a cluster member
	lessor  *lease.Lessor
	// proposer is the loop, or a cluster member's Raft proposer.
	proposer apply.Proposer

	// A cluster member's (cluster.go); nil for a single member.
	node          *raftnode.Node
	machine       *apply.RaftMachine
	logStore      *raftnode.LogStore
	peerTransport *raftnode.PeerTransport
	peerServer    *h2grpc.Server
	peerListeners []net.Listener
	peers         *peerClients
	health        *peerHealth // since when each peer is connected (peerhealth.go)
	// expiredRevokes counts expired leases this member revoked.
	expiredRevokes atomic.Uint64

	auth   *auth.Store
	tokens *auth.Tokens
	// guard identifies, authorizes and admits every request, and owns the
	// policies and tenants (reloaded without a restart).
	guard *guard.Guard
	// rpc is etcd's gRPC services over the parts above.
	rpc *v3rpc.Server

	ids v3rpc.IDs
	// transport is the listeners and the gRPC and HTTP servers on them.
	transport *serve.Server
	metrics   *v3rpc.Metrics
	peerRTT   *prometheus.HistogramVec // a cluster member's (peermetrics.go)
	// live is what a reload changes while serving (reload.go).
	live liveSettings

	stopOnce sync.Once
	stopping chan struct{}  // closed when shutdown begins; ends long-lived streams
	bg       sync.WaitGroup // background loops, stopped before storage closes
	bgCancel context.CancelFunc
}

// New opens the data directory and binds the client listeners, so that
// ClientAddrs is valid as soon as New returns. Run starts serving.
func New(cfg *config.Config, lg *slog.Logger) (*Server, error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	// A snapshot interrupted by a crash leaves its checkpoint behind.
	os.RemoveAll(filepath.Join(cfg.DataDir, v3rpc.SnapshotTmpDir))
	store, err := mvcc.Open(cfg.DataDir, mvcc.Options{Logger: lg.With("component", "mvcc")})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, lg: lg, store: store, metrics: v3rpc.NewMetrics(), stopping: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			s.closeStorage()
		}
	}()
	var cs *clusterState
	self := func() *pb.Member { return &pb.Member{ID: s.ids.Member, PeerURLs: cfg.Server.AdvertisePeerURLs} }
	if cfg.ClusterMode() {
		if cs, err = s.prepareCluster(context.Background()); err != nil {
			return nil, err
		}
		self = func() *pb.Member { return cs.self }
	} else {
		if err := refuseClusterDataDir(store); err != nil {
			return nil, err
		}
		if s.ids, err = v3rpc.BootstrapIDs(store); err != nil {
			return nil, err
		}
	}
	s.lessor = lease.New(lease.Config{RevokeRate: cfg.Lease.RevokeRate, RestartGrace: cfg.Lease.RestartGrace})
	minTTL := int64(cfg.Lease.MinTTL / time.Second)
	if err := apply.LoadLeases(store, minTTL, s.lessor.Restore); err != nil {
		return nil, err
	}
	if err := s.openAuth(); err != nil {
		return nil, err
	}
	if s.applier, err = apply.New(store, apply.Options{
		Auth: s.auth, Tenants: guard.ApplyTenants(cfg.Tenants), Leases: s.lessor, MinLeaseTTL: minTTL,
		Self:           self(),
		MaxLearners:    cfg.Cluster.MaxLearners,
		ClusterVersion: v3rpc.InitialClusterVersion,
	}); err != nil {
		return nil, err
	}
	// The hub starts at the store's revision; every batch the loop commits
	// reaches it before the batch's callers are answered.
	s.hub = mvcc.NewHub(store, mvcc.HubOptions{ResponseMaxBytes: v3rpc.WatchResponseBytes(cfg.Limits)})
	var counter guard.TenantCounter
	if cs != nil && cs.initialized && cfg.Cluster.InitialCorruptCheck {
		if err := s.initialCorruptCheck(context.Background()); err != nil {
			return nil, err
		}
	}
	if cs != nil {
		if err := s.startCluster(cs); err != nil {
			return nil, err
		}
		counter = s.machine
	} else {
		if s.loop, err = apply.NewLoop(store, s.applier, apply.LoopOptions{OnCommit: s.hub.Publish, OnBatch: s.metrics.ObserveBatch}); err != nil {
			return nil, err
		}
		s.proposer, counter = s.loop, s.loop
	}
	s.live.init(cfg)
	if s.guard, err = guard.New(guard.Options{
		Config: cfg, Logger: lg, Auth: s.auth, Tokens: s.tokens,
		Applier: s.applier, Counter: counter, Store: store, LeaseKeys: s.readLeaseKeys,
		Validate:  v3rpc.Validators(cfg.Limits.MaxTxnOps),
		Metrics:   guard.Metrics{Registry: s.metrics.Registry(), RateLimited: s.metrics.RateLimited(), Reloaded: s.countReload},
		ApplyLive: s.applyLive, // reload.go
		CatchUp:   s.catchUp(),
	}); err != nil {
		return nil, err
	}
	s.rpc = v3rpc.New(v3rpc.Member{
		Config: cfg, Logger: lg, Store: store, Hub: s.hub, Applier: s.applier, Proposer: s.proposer, Lessor: s.lessor,
		Auth: s.auth, Tokens: s.tokens, Guard: s.guard, Metrics: s.metrics, Stopping: s.stopping,
		IDs:             s.ids,
		ClientAddrs:     s.ClientAddrs,
		SlowThreshold:   s.live.slowThreshold,
		Raft:            s.node,
		Leader:          s.leaderForwarder(),
		PeerActiveSince: s.peerActiveSince(),
	})
	if s.transport, err = serve.New(serve.Options{
		Config: cfg, Logger: lg, NewGRPC: s.newGRPCServer, Codec: v3rpc.Codec(),
		GatewayRoutes: []func(*gwruntime.ServeMux, *grpc.ClientConn) error{v3lock.RegisterGateway},
		Health:        s.handleHealth, Version: s.handleVersion, Metrics: s.metricsHandler(),
		Probes:      http.HandlerFunc(s.handleProbes),
		AuthEnabled: func() bool { enabled, _, _ := s.auth.State(); return enabled },
		ConnRefused: s.metrics.ConnRefused, Revision: s.store.Rev,
	}); err != nil {
		return nil, err
	}
	if s.node != nil {
		s.servePeers()
	}
	ok = true
	return s, nil
}

// newGRPCServer is a gRPC server with etcd's services (server/v3rpc) and
// Lock and Election (server/v3lock), which call the KV and Lease services
// in-process as the caller: grpc-go's or the lean transport
// (grpc.transport), with the same services, interceptors and limits.
func (s *Server) newGRPCServer(creds credentials.TransportCredentials) serve.GRPCServer {
	lock := v3lock.Deps{
		KV: s.rpc.KV(), Lease: s.rpc.Lease(), Hub: s.hub, FillHeader: s.rpc.FillHeader,
		AuthorizeWatch: s.rpc.AuthorizeWatch, Stopping: s.stopping,
	}
	if s.cfg.GRPC.Transport == config.TransportLean {
		l := newLeanServer(s.cfg, s.rpc.Transport(), creds, s.guard.Policies, s.rpc.InlineStream)
		s.rpc.RegisterServices(l)
		v3lock.Register(l, lock)
		return l
	}
	g := s.rpc.NewGRPCServer(creds)
	v3lock.Register(g, lock)
	return g
}

// ClientAddrs returns the bound client listener addresses (host:port).
func (s *Server) ClientAddrs() []string { return s.transport.Addrs() }

// Run serves until ctx is cancelled, then shuts down gracefully: stop
// accepting, finish in-flight requests, apply what is queued, close storage.
func (s *Server) Run(ctx context.Context) error {
	bgCtx, cancel := context.WithCancel(context.Background())
	s.bgCancel = cancel
	s.startBackground(bgCtx)
	if s.node != nil {
		var stop context.CancelFunc
		ctx, stop = context.WithCancel(ctx)
		defer stop()
		published := s.runCluster(bgCtx, stop)
		// As etcd's, clients are served once this member has published
		// its name and client URLs (it has joined: a leader exists and the
		// cluster has applied its attributes).
		select {
		case <-published:
		case <-ctx.Done():
		}
	}
	err := s.transport.Serve(ctx)
	s.lg.Info("shutting down")
	s.stop()
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// SetConfigReloader gives the server the function that re-reads the
// configuration when it is reloaded (on SIGHUP or a changed file). Call it
// before Run.
func (s *Server) SetConfigReloader(f func() (*config.Config, error)) { s.guard.SetConfigReloader(f) }

// Reload re-reads the configuration (through the reloader, if set) and
// applies its policies and tenants; see ReloadConfig. An invalid
// configuration changes nothing; it is logged and counted.
func (s *Server) Reload(ctx context.Context) error { return s.guard.Reload(ctx) }

// ReloadConfig applies the policies, authorization chain and tenants of cfg
// (nil re-reads the current policies' files) without a restart and without
// dropping a request; see guard.Guard.ReloadConfig.
func (s *Server) ReloadConfig(ctx context.Context, cfg *config.Config) error {
	return s.guard.ReloadConfig(ctx, cfg)
}

// startBackground starts the loops that run beside request handling.
func (s *Server) startBackground(ctx context.Context) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.guard.Run(ctx)
	}()
	s.bg.Add(4)
	go func() {
		defer s.bg.Done()
		s.runQuota(ctx)
	}()
	go func() {
		defer s.bg.Done()
		s.rpc.RunVersionMonitor(ctx)
	}()
	go func() {
		defer s.bg.Done()
		s.runLeaseExpiry(ctx)
	}()
	go func() {
		defer s.bg.Done()
		s.runLeaseCheckpoints(ctx)
	}()
	period, retention, _ := s.cfg.Maintenance.CompactionRetention() // validated in New
	if period > 0 || retention > 0 {
		ac := &autoCompactor{
			period:    period,
			retention: retention,
			rev:       s.store.Rev,
			compact: func(ctx context.Context, rev int64) error {
				if !s.rpc.IsLeader() {
					return nil // the leader compacts, as etcd's
				}
				res, err := s.proposer.Propose(ctx, &apply.Request{Compaction: &pb.CompactionRequest{Revision: rev}})
				if err != nil {
					return err
				}
				return res.Err
			},
			clock: realClock{},
			lg:    s.lg.With("component", "auto-compaction"),
		}
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			ac.run(ctx)
		}()
	}
}

func (s *Server) stop() {
	s.stopOnce.Do(func() {
		close(s.stopping)
		s.transport.Stop()
		s.transferLeadership() // handover.go; before the peer probes stop
		if s.bgCancel != nil {
			s.bgCancel()
		}
		s.bg.Wait()
		// Persist every remaining TTL, so the restart restores them exactly.
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if err := s.checkpointLeases(cctx); err != nil {
			s.lg.Warn("final lease checkpoint failed", "component", "lease", "err", err)
		}
		s.closeStorage()
	})
}

func (s *Server) closeStorage() {
	if s.lessor != nil {
		s.lessor.Stop()
	}
	if s.loop != nil {
		s.loop.Stop()
	}
	s.stopCluster()
	if s.guard != nil {
		s.guard.Close()
	}
	if s.tokens != nil {
		s.tokens.Close()
	}
	if err := s.store.Close(); err != nil {
		s.lg.Error("close storage", "err", err)
	}
	if s.transport != nil {
		s.transport.Close()
	}
}

// RestoreOptions tune RestoreSnapshot (etcdutl's flags); see
// v3rpc.RestoreOptions.
type RestoreOptions = v3rpc.RestoreOptions

// RestoreSnapshot restores a snapshot file (etcd's or metastore's, or
// etcd's member/snap/db) into dataDir as a new one-member cluster
// (`metastore snapshot restore`); see v3rpc.RestoreSnapshot.
func RestoreSnapshot(file, dataDir string, opts RestoreOptions) (rev int64, err error) {
	return v3rpc.RestoreSnapshot(file, dataDir, opts)
}
