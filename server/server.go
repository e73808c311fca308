package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	gwruntime "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/lease"
	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/guard"
	"github.com/metastore-dev/metastore/server/serve"
	"github.com/metastore-dev/metastore/server/v3lock"
)

// EtcdVersion is the etcd version metastore reports in Status. Clients such
// as kube-apiserver enable features by it.
const EtcdVersion = "3.6.0"

// grpcOverheadBytes is what etcd allows on top of --max-request-bytes for
// gRPC framing before the transport refuses a message.
const grpcOverheadBytes = 512 * 1024

// Server is one metastore member: storage, the apply loop and the gRPC API.
type Server struct {
	cfg *config.Config
	lg  *slog.Logger

	store    *mvcc.Store
	hub      *mvcc.Hub
	watch    *watchServer
	applier  *apply.Applier
	loop     *apply.Loop
	lessor   *lease.Lessor
	leaseIDs *leaseIDGen

	auth   *auth.Store
	tokens *auth.Tokens
	// guard identifies, authorizes and admits every request, and owns the
	// policies and tenants (reloaded without a restart).
	guard *guard.Guard

	ids memberIDs
	// transport is the listeners and the gRPC and HTTP servers on them.
	transport *serve.Server
	metrics   *metrics

	stopOnce sync.Once
	stopping chan struct{}  // closed when shutdown begins; ends long-lived streams
	bg       sync.WaitGroup // background loops, stopped before storage closes
	bgCancel context.CancelFunc
}

// memberIDs identify the cluster and this member; fixed at first start.
type memberIDs struct {
	cluster, member, term uint64
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
	os.RemoveAll(filepath.Join(cfg.DataDir, snapshotTmpDir))
	store, err := mvcc.Open(cfg.DataDir, mvcc.Options{Logger: lg.With("component", "mvcc")})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, lg: lg, store: store, metrics: newMetrics(), stopping: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			s.closeStorage()
		}
	}()
	if s.ids, err = bootstrapIDs(store); err != nil {
		return nil, err
	}
	s.leaseIDs = newLeaseIDGen(s.ids.member, time.Now())
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
		Self:           &pb.Member{ID: s.ids.member, PeerURLs: cfg.Server.AdvertisePeerURLs},
		MaxLearners:    cfg.Cluster.MaxLearners,
		ClusterVersion: initialClusterVersion,
	}); err != nil {
		return nil, err
	}
	// The hub starts at the store's revision; every batch the loop commits
	// reaches it before the batch's callers are answered.
	s.hub = mvcc.NewHub(store, mvcc.HubOptions{})
	s.watch = newWatchServer(s)
	if s.loop, err = apply.NewLoop(store, s.applier, apply.LoopOptions{OnCommit: s.hub.Publish, OnBatch: s.metrics.observeBatch}); err != nil {
		return nil, err
	}
	if s.guard, err = guard.New(guard.Options{
		Config: cfg, Logger: lg, Auth: s.auth, Tokens: s.tokens,
		Applier: s.applier, Counter: s.loop, Store: store, LeaseKeys: s.readLeaseKeys,
		Validate: guard.Validators{Put: checkPutRequest, DeleteRange: checkDeleteRequest, Txn: s.checkTxnMutation},
		Metrics:  guard.Metrics{Registry: s.metrics.reg, RateLimited: s.metrics.rateLimited, Reloaded: s.metrics.reloaded},
	}); err != nil {
		return nil, err
	}
	s.registerStoreMetrics()
	s.metrics.reg.MustRegister(watchMetrics(s.hub)...)
	if s.transport, err = serve.New(serve.Options{
		Config: cfg, Logger: lg, NewGRPC: s.newGRPCServer, Codec: newGogoCodec(),
		GatewayRoutes: []func(*gwruntime.ServeMux, *grpc.ClientConn) error{v3lock.RegisterGateway},
		Health:        s.handleHealth, Version: s.handleVersion, Metrics: s.metricsHandler(),
		AuthEnabled: func() bool { enabled, _, _ := s.auth.State(); return enabled },
		ConnRefused: s.metrics.connsRefused.Inc, Revision: s.store.Rev,
	}); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

func (s *Server) newGRPCServer(creds credentials.TransportCredentials) *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(newGogoCodec()),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		grpc.MaxRecvMsgSize(s.cfg.Limits.MaxRequestBytes + grpcOverheadBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(s.cfg.GRPC.MaxConcurrentStreams),
		grpc.NumStreamWorkers(s.cfg.GRPC.StreamWorkers),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             s.cfg.GRPC.KeepaliveMinTime,
			PermitWithoutStream: false,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    s.cfg.GRPC.KeepaliveInterval,
			Timeout: s.cfg.GRPC.KeepaliveTimeout,
		}),
	}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	g := grpc.NewServer(opts...)
	g.RegisterService(&kvServiceDesc, &kvServer{s: s}) // etcd 3.7's KV, with RangeStream
	pb.RegisterMaintenanceServer(g, &maintenanceServer{s: s})
	pb.RegisterClusterServer(g, &clusterServer{s: s})
	pb.RegisterAuthServer(g, &authServer{s: s})
	pb.RegisterWatchServer(g, s.watch)
	pb.RegisterLeaseServer(g, &leaseServer{s: s})
	v3lock.Register(g, v3lock.Deps{
		KV: &kvServer{s: s}, Lease: &leaseServer{s: s}, Hub: s.hub, FillHeader: s.fillHeader, Stopping: s.stopping,
		AuthorizeWatch: func(ctx context.Context, key, end []byte) error {
			if err := s.authorizeWatch(ctx, key, end); err != nil {
				return errors.New(watchCancelReason(err))
			}
			return nil
		},
	})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
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
		s.runVersionMonitor(ctx)
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
				res, err := s.loop.Propose(ctx, &apply.Request{Compaction: &pb.CompactionRequest{Revision: rev}})
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

// fillHeader completes a response header as etcd does; a revision already set
// by the operation is kept.
func (s *Server) fillHeader(h *pb.ResponseHeader) {
	if h == nil {
		return
	}
	h.ClusterId = s.ids.cluster
	h.MemberId = s.ids.member
	h.RaftTerm = s.ids.term
	if h.Revision == 0 {
		h.Revision = s.store.Rev()
	}
}

const (
	metaClusterID = "cluster_id"
	metaMemberID  = "member_id"
	metaTerm      = "raft_term"
)

// bootstrapIDs reads the cluster and member ids, creating them on first start.
func bootstrapIDs(s *mvcc.Store) (memberIDs, error) {
	var ids memberIDs
	get := func(name string) (uint64, error) {
		v, err := s.Meta(name)
		if err != nil || v == nil {
			return 0, err
		}
		if len(v) != 8 {
			return 0, fmt.Errorf("meta %s: bad length %d", name, len(v))
		}
		return binary.BigEndian.Uint64(v), nil
	}
	var err error
	if ids.cluster, err = get(metaClusterID); err != nil {
		return ids, err
	}
	if ids.member, err = get(metaMemberID); err != nil {
		return ids, err
	}
	if ids.term, err = get(metaTerm); err != nil {
		return ids, err
	}
	if ids.cluster != 0 && ids.member != 0 && ids.term != 0 {
		return ids, nil
	}
	ids = newMemberIDs()
	return ids, writeIDs(s, ids)
}

// newMemberIDs returns the ids of a new one-member cluster.
func newMemberIDs() memberIDs {
	return memberIDs{cluster: randomID(), member: randomID(), term: 2}
}

// writeIDs stores ids durably.
func writeIDs(s *mvcc.Store, ids memberIDs) error {
	b, err := s.NewBatch()
	if err != nil {
		return err
	}
	for name, v := range map[string]uint64{metaClusterID: ids.cluster, metaMemberID: ids.member, metaTerm: ids.term} {
		if err := b.SetMeta(name, binary.BigEndian.AppendUint64(nil, v)); err != nil {
			b.Abort()
			return err
		}
	}
	return b.Commit()
}

func randomID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on supported platforms
		}
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}
