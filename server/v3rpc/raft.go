package v3rpc

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/metastore-dev/metastore/server/raftnode"
)

// The services of a cluster member (package server sets Member.Raft): what
// differs from a single member is here, each a no-op when Raft is nil.

// LeaderForwarder reaches the leader for what only its lessor knows, and
// for what raft accepts only there (package server implements it over
// the peer service).
type LeaderForwarder interface {
	// LeaseRenew renews a lease on the leader and returns its TTL.
	LeaseRenew(ctx context.Context, id int64) (int64, error)
	// LeaseTimeToLive answers TimeToLive (without keys) on the leader.
	LeaseTimeToLive(ctx context.Context, id int64) (*pb.LeaseTimeToLiveResponse, error)
	// MemberPromote promotes a learner on the leader.
	MemberPromote(ctx context.Context, id uint64) error
}

// raftErrors map the node's errors to etcd's.
var raftErrors = []struct {
	err  error
	grpc error
}{
	{raftnode.ErrNoLeader, rpctypes.ErrGRPCNoLeader},
	{raftnode.ErrLeaderChanged, rpctypes.ErrGRPCLeaderChanged},
	{raftnode.ErrTimeout, rpctypes.ErrGRPCTimeout},
	{raftnode.ErrNotLeader, rpctypes.ErrGRPCNotLeader},
	{raftnode.ErrLearnerNotReady, rpctypes.ErrGRPCLearnerNotReady},
	{raftnode.ErrBadTransferee, rpctypes.ErrGRPCBadLeaderTransferee},
	{raftnode.ErrStopped, rpctypes.ErrGRPCStopped},
	{raftnode.ErrRemoved, rpctypes.ErrGRPCStopped},
}

// raftTerm is the term in response headers: the node's, or the fixed one of
// a single member.
func (s *Server) raftTerm() uint64 {
	if s.raft != nil {
		return s.raft.Term()
	}
	return s.ids.term
}

// linearizableRead waits until this member has applied everything
// committed before the call (a batched ReadIndex round), as etcd's
// linearizableReadNotify; a single member needs nothing.
func (s *Server) linearizableRead(ctx context.Context) error {
	if s.raft == nil {
		return nil
	}
	if d, ok := ctx.Value(readDoneKey{}).(*readDone); ok {
		return d.err // DeferRead's round, which began after the call arrived
	}
	_, err := s.raft.ReadIndex(ctx)
	return err
}

// readDoneKey marks the context of a call DeferRead ran after its read
// round; the value is a *readDone. Only DeferRead sets it.
type readDoneKey struct{}

type readDone struct{ err error }

var readOK = &readDone{}

// DeferRead is the lean transport's Options.Defer on a cluster member: a
// linearizable Range of one key (DeferredRead) joins the next read round
// without a goroutine waiting for it, and runs once the round is done, its
// linearizableRead answered by the round (RATIONALE.md, "Linearizable
// one-key Ranges wait without a goroutine"). The round is the one
// linearizableRead would have joined at this moment: it starts after the
// call arrived, as etcd's read loop's.
func (s *Server) DeferRead(ctx context.Context, path string, msg []byte, run func(context.Context)) bool {
	if s.raft == nil || !DeferredRead(path, msg) {
		return false
	}
	s.raft.ReadIndexFunc(func(_ uint64, err error) {
		d := readOK
		if err != nil {
			d = &readDone{err: err}
		}
		run(&readDoneCtx{Context: ctx, done: d})
	})
	return true
}

// readDoneCtx is a deferred call's context: the transport's, with the
// round's outcome under readDoneKey. It keeps the lean transport's
// FirstIncomingValue, which context.WithValue would hide.
type readDoneCtx struct {
	context.Context
	done *readDone
}

func (c *readDoneCtx) Value(key any) any {
	if _, ok := key.(readDoneKey); ok {
		return c.done
	}
	return c.Context.Value(key)
}

func (c *readDoneCtx) FirstIncomingValue(key string) (string, bool) {
	if fv, ok := c.Context.(firstIncomingValuer); ok {
		return fv.FirstIncomingValue(key)
	}
	if vs := metadata.ValueFromIncomingContext(c.Context, key); len(vs) > 0 {
		return vs[0], true
	}
	return "", false
}

// requireLeader refuses a request that asked for a leader (clientv3's
// WithRequireLeader: metadata hasleader=true) while there is none.
func (s *Server) requireLeader(ctx context.Context) error {
	if s.raft == nil || s.raft.Leader() != 0 {
		return nil
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(rpctypes.MetadataRequireLeaderKey); len(v) > 0 && v[0] == rpctypes.MetadataHasLeader {
			return rpctypes.ErrGRPCNoLeader
		}
	}
	return nil
}

// forwardLease reports whether lease requests go to the leader: a
// follower's lessor does not expire or renew. The forwarder waits for a
// leader within the request timeout, as etcd's.
func (s *Server) forwardLease() (bool, error) {
	if s.raft == nil || s.raft.IsLeader() {
		return false, nil
	}
	if s.leader == nil {
		return false, rpctypes.ErrGRPCNoLeader
	}
	return true, nil
}

// isLeader reports whether this member runs the leader's duties (lease
// expiry, compaction, version monitor): always on a single member.
func (s *Server) isLeader() bool { return s.raft == nil || s.raft.IsLeader() }

// IsLeader is isLeader for the member's background loops.
func (s *Server) IsLeader() bool { return s.isLeader() }

func raftError(err error) (error, bool) {
	for _, e := range raftErrors {
		if errors.Is(err, e.err) {
			return e.grpc, true
		}
	}
	return nil, false
}

// isTxnSerializable is etcd's: a txn whose every op is a serializable
// range may be answered locally.
func isTxnSerializable(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, u := range ops {
			if rr := u.GetRequestRange(); rr == nil || !rr.Serializable {
				return false
			}
		}
	}
	return true
}

// requestTimeout is etcd's ReqTimeout: 5s plus two election timeouts.
func (s *Server) requestTimeout() time.Duration {
	return 5*time.Second + 2*s.cfg.Cluster.ElectionTimeout
}

// GRPCError maps an internal error to what etcd sends for it (the member's
// peer service answers forwarded requests with it).
func GRPCError(err error) error { return toGRPCError(err) }

// monitorLeader ends a stream that asked for a leader (WithRequireLeader)
// once the member has seen none for three election timeouts in a row, as
// etcd's monitorLeader does; the stream then ends with ErrGRPCNoLeader. It
// returns the stream's context and a function that reports whether that
// happened, to be called once the handler returned.
func (s *Server) monitorLeader(ctx context.Context) (context.Context, func() bool, func()) {
	none := func() bool { return false }
	if s.raft == nil {
		return ctx, none, func() {}
	}
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx, none, func() {}
	}
	if v := md.Get(rpctypes.MetadataRequireLeaderKey); len(v) == 0 || v[0] != rpctypes.MetadataHasLeader {
		return ctx, none, func() {}
	}
	cctx, cancel := context.WithCancel(ctx)
	var lost atomic.Bool
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(s.cfg.Cluster.ElectionTimeout)
		defer t.Stop()
		misses := 0
		for {
			select {
			case <-t.C:
			case <-done:
				return
			case <-cctx.Done():
				return
			}
			if s.raft.Leader() != 0 {
				misses = 0
				continue
			}
			if misses++; misses >= 3 {
				lost.Store(true)
				cancel()
				return
			}
		}
	}()
	return cctx, lost.Load, func() { close(done); cancel() }
}

// leaderStream is a server stream whose context monitorLeader may end.
type leaderStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (l *leaderStream) Context() context.Context { return l.ctx }

// isLearner reports whether this member is a learner of a cluster.
func (s *Server) isLearner() bool {
	if s.raft == nil {
		return false
	}
	m := s.applier.Members().Member(s.ids.member)
	return m != nil && m.IsLearner
}

// learnerUnary refuses what a learner does not serve, as etcd's
// interceptor: only Status and serializable ranges.
func (s *Server) learnerUnary(req any) error {
	if !s.isLearner() {
		return nil
	}
	switch r := req.(type) {
	case *pb.StatusRequest:
		return nil
	case *pb.RangeRequest:
		if r.Serializable {
			return nil
		}
	}
	return rpctypes.ErrGRPCNotSupportedForLearner
}

// learnerStream refuses every stream but Snapshot on a learner, as etcd's.
func (s *Server) learnerStream(method string) error {
	if s.isLearner() && method != "/etcdserverpb.Maintenance/Snapshot" {
		return rpctypes.ErrGRPCNotSupportedForLearner
	}
	return nil
}
