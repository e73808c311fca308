package v3rpc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/keepalive"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/lease"
	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/guard"
	"github.com/metastore-dev/metastore/server/raftnode"
)

// EtcdVersion is the etcd version metastore reports in Status, /version and
// etcd_server_version: the release of the etcd API module it is built with
// (TestEtcdVersionIsAPIModules keeps them equal). Clients such as
// kube-apiserver enable features by it; the cluster version is its
// major.minor.
const EtcdVersion = "3.6.16"

// grpcOverheadBytes is what etcd allows on top of --max-request-bytes for
// gRPC framing before the transport refuses a message.
const grpcOverheadBytes = 512 * 1024

// IDs identify the cluster and this member; fixed at first start.
type IDs struct{ Cluster, Member, Term uint64 }

// memberIDs are IDs as the services read them.
type memberIDs struct {
	cluster, member, term uint64
}

// Member is the member's parts the services answer from and propose to;
// the member (package server) wires them.
type Member struct {
	Config   *config.Config
	Logger   *slog.Logger
	Store    *mvcc.Store
	Hub      *mvcc.Hub
	Applier  *apply.Applier
	Proposer apply.Proposer
	Lessor   *lease.Lessor
	Auth     *auth.Store
	Tokens   *auth.Tokens
	Guard    *guard.Guard
	Metrics  *Metrics
	IDs      IDs
	// Stopping is closed when shutdown begins; it ends long-lived streams.
	Stopping <-chan struct{}
	// ClientAddrs are the bound client listeners (for MemberList).
	ClientAddrs func() []string
	// SlowThreshold is monitoring.slow_request_threshold as last reloaded;
	// nil: the configuration's.
	SlowThreshold func() time.Duration
	// Raft is the member's Raft node; nil for a single member on the
	// group-commit loop (raft.go).
	Raft *raftnode.Node
	// Leader reaches the leader (lease keep-alive and TimeToLive on a
	// follower, promotion); with Raft only.
	Leader LeaderForwarder
	// CanAddMember, if set, refuses a member add the cluster could not
	// serve (a new member that could not catch up).
	CanAddMember func() error
	// PeerActiveSince is when this member's connection to a peer came
	// up (zero: not connected), etcd's transport ActiveSince, for the
	// reconfiguration checks; with Raft only.
	PeerActiveSince func(id uint64) time.Time
}

// Server holds etcd's gRPC services of one member. Each handler is a
// straight line: validate, ask the guard, propose or read, answer; errors
// leave through the one table (toGRPCError).
type Server struct {
	cfg      *config.Config
	lg       *slog.Logger
	store    *mvcc.Store
	hub      *mvcc.Hub
	watch    *watchServer
	applier  *apply.Applier
	loop     apply.Proposer
	lessor   *lease.Lessor
	leaseIDs *leaseIDGen
	auth     *auth.Store
	tokens   *auth.Tokens
	guard    *guard.Guard
	ids      memberIDs
	metrics  *metrics
	stopping <-chan struct{}
	addrs    func() []string
	slow     func() time.Duration // nil: cfg's threshold
	quota    *spaceQuota          // etcd's backend quota (spacequota.go)
	raft     *raftnode.Node       // nil on a single member
	leader   LeaderForwarder
	canAdd   func() error
	// activeSince is Member.PeerActiveSince.
	activeSince func(id uint64) time.Time
}

// New builds the services over m and registers their metrics.
func New(m Member) *Server {
	lg := m.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: m.Config, lg: lg, store: m.Store, hub: m.Hub, applier: m.Applier, loop: m.Proposer,
		lessor: m.Lessor, auth: m.Auth, tokens: m.Tokens, guard: m.Guard, metrics: m.Metrics,
		ids:      memberIDs{cluster: m.IDs.Cluster, member: m.IDs.Member, term: m.IDs.Term},
		stopping: m.Stopping, addrs: m.ClientAddrs, slow: m.SlowThreshold,
		raft: m.Raft, leader: m.Leader, canAdd: m.CanAddMember, activeSince: m.PeerActiveSince,
	}
	s.leaseIDs = newLeaseIDGen(s.ids.member, time.Now())
	s.quota = newSpaceQuota(s.store, s.quotaBytes(), s.liveDBSize)
	s.watch = newWatchServer(s)
	s.registerStoreMetrics()
	s.registerIdentityMetrics()
	s.metrics.reg.MustRegister(watchMetrics(s.hub)...)
	return s
}

// Codec is the gRPC codec of the services (etcd's generated marshalling);
// the JSON gateway's client uses it too.
func Codec() encoding.CodecV2 { return newGogoCodec() }

// NewGRPCServer returns a gRPC server with the interceptors, the codec, the
// limits and etcd's six services registered (KV with etcd 3.7's
// RangeStream), and gRPC health; the member adds Lock and Election
// (server/v3lock). creds is nil for plaintext listeners.
func (s *Server) NewGRPCServer(creds credentials.TransportCredentials) *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(s.serverCodec()),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		grpc.MaxRecvMsgSize(s.cfg.Limits.MaxRequestBytes + grpcOverheadBytes),
		grpc.MaxSendMsgSize(maxSendMsgSize(s.cfg.Limits)),
		grpc.MaxConcurrentStreams(s.cfg.GRPC.MaxConcurrentStreams),
		grpc.NumStreamWorkers(s.cfg.GRPC.StreamWorkers),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             s.cfg.GRPC.KeepaliveMinTime,
			PermitWithoutStream: false,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    s.cfg.GRPC.KeepaliveInterval,
			Timeout: s.cfg.GRPC.KeepaliveTimeout,
			// Connection lifetime (grpc.max_connection_*); 0 is gRPC's "never".
			MaxConnectionIdle:     s.cfg.GRPC.MaxConnectionIdle,
			MaxConnectionAge:      s.cfg.GRPC.MaxConnectionAge,
			MaxConnectionAgeGrace: s.cfg.GRPC.MaxConnectionAgeGrace,
		}),
	}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	g := grpc.NewServer(opts...)
	s.RegisterServices(g)
	return g
}

// KV, Lease and Auth are the services as in-process callers use them
// (Lock and Election, tests).
func (s *Server) KV() pb.KVServer       { return &kvServer{s: s} }
func (s *Server) Lease() pb.LeaseServer { return &leaseServer{s: s} }
func (s *Server) Auth() pb.AuthServer   { return &authServer{s: s} }

// fillHeader completes a response header as etcd does; a revision already set
// by the operation is kept.
func (s *Server) fillHeader(h *pb.ResponseHeader) {
	if h == nil {
		return
	}
	h.ClusterId = s.ids.cluster
	h.MemberId = s.ids.member
	h.RaftTerm = s.raftTerm()
	if h.Revision == 0 {
		h.Revision = s.store.Rev()
	}
}

// DBSize returns the database's size on disk and the part in use.
func (s *Server) DBSize() (size, inUse int64) { return s.dbSize() }

// ClusterVersion is the cluster version ("major.minor.patch").
func (s *Server) ClusterVersion() string { return s.clusterVersion().String() }

// RunVersionMonitor raises the cluster version as etcd's monitor does, until
// ctx ends (the member runs it as one of its background loops).
func (s *Server) RunVersionMonitor(ctx context.Context) { s.runVersionMonitor(ctx) }

// AuthorizeWatch checks READ on a watch's range as the caller; its error
// says why as the cancel reason etcd sends for a refused watch (Lock and
// Election report it so).
func (s *Server) AuthorizeWatch(ctx context.Context, key, end []byte) error {
	if err := s.authorizeWatch(ctx, key, end); err != nil {
		return errors.New(watchCancelReason(err))
	}
	return nil
}

// slowThreshold is the slow-request threshold in effect.
func (s *Server) slowThreshold() time.Duration {
	if s.slow != nil {
		return s.slow()
	}
	return s.cfg.Monitoring.SlowRequestThreshold
}

// FillHeader completes a response header as the member's.
func (s *Server) FillHeader(h *pb.ResponseHeader) { s.fillHeader(h) }
