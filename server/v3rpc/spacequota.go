package v3rpc

import (
	"context"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
)

// What etcd charges a request against the space quota (its storage
// package's kvOverhead and leaseOverhead): a key's metadata and a lease.
const (
	quotaKVOverhead    = 256
	quotaLeaseOverhead = 64
)

// quotaCostPut is etcd's cost of a put: the overhead, key and value.
func quotaCostPut(r *pb.PutRequest) int64 {
	return quotaKVOverhead + int64(len(r.Key)) + int64(len(r.Value))
}

// quotaCostTxn is etcd's cost of a txn: the puts of its costlier branch,
// nested txns included. A txn without puts costs nothing.
func quotaCostTxn(r *pb.TxnRequest) int64 {
	branch := func(ops []*pb.RequestOp) (n int64) {
		for _, op := range ops {
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestPut:
				if v.RequestPut != nil {
					n += quotaCostPut(v.RequestPut)
				}
			case *pb.RequestOp_RequestTxn:
				if v.RequestTxn != nil {
					n += quotaCostTxn(v.RequestTxn)
				}
			}
		}
		return n
	}
	return max(branch(r.Success), branch(r.Failure))
}

// spaceQuota is etcd's backend quota as its gRPC layer applies it: a put,
// a txn with puts or a lease grant is refused when the database's size
// plus the request's cost would reach the quota.
//
// NB: Pebble's size is measured by the member's quota loop (every
// quotaCheckInterval; reading Pebble's metrics costs too much to do per
// request), and the bytes committed since then are added from the store's
// counter, so a write still in the memtable and WAL counts as soon as it
// is acknowledged. Admitted requests also reserve their cost until they
// are done, so concurrent writes cannot all pass the same check and
// overshoot the quota together.
type spaceQuota struct {
	store *mvcc.Store
	limit int64
	// base is the last measured size minus the store's WrittenBytes read
	// just before measuring it.
	base atomic.Int64
	// reserved is the cost of the requests admitted and not yet done.
	reserved atomic.Int64
}

func newSpaceQuota(store *mvcc.Store, limit int64, measure func() int64) *spaceQuota {
	q := &spaceQuota{store: store, limit: limit}
	q.remeasure(measure)
	return q
}

// remeasure takes a new measurement of the database's size.
func (q *spaceQuota) remeasure(measure func() int64) int64 {
	// NB: the counter is read first: a batch committed in between counts
	// twice until the next measurement, never zero times.
	w := q.store.WrittenBytes()
	size := measure()
	q.base.Store(size - w)
	return size
}

// size is the database's size as the quota sees it: measured, plus what
// was committed since, plus what admitted requests may still add.
func (q *spaceQuota) size() int64 {
	return q.base.Load() + q.store.WrittenBytes() + q.reserved.Load()
}

// reserve admits a request of the given cost if the size stays under the
// limit (etcd's strict "<"), and holds the cost until release.
func (q *spaceQuota) reserve(cost int64) bool {
	for {
		r := q.reserved.Load()
		if q.base.Load()+q.store.WrittenBytes()+r+cost >= q.limit {
			return false
		}
		if q.reserved.CompareAndSwap(r, r+cost) {
			return true
		}
	}
}

func (q *spaceQuota) release(cost int64) { q.reserved.Add(-cost) }

// reserveSpace is etcd's quota check, made before anything else about the
// request (so a full database refuses even a malformed put, as etcd's
// does): a request with a cost that does not fit raises the NOSPACE alarm
// and fails with ErrGRPCNoSpace. Otherwise the caller must call
// s.quota.release(cost) when the request is done.
func (s *Server) reserveSpace(ctx context.Context, cost int64) error {
	if cost == 0 || s.quota.reserve(cost) {
		return nil
	}
	if !s.applier.HasAlarm(pb.AlarmType_NOSPACE) {
		s.lg.Warn("database space exceeded; raising NOSPACE alarm",
			"db-size", s.quota.size(), "request-cost", cost, "quota-size", s.quota.limit)
		if _, err := s.propose(ctx, &apply.Request{Alarm: &pb.AlarmRequest{
			Action: pb.AlarmRequest_ACTIVATE, MemberID: s.ids.member, Alarm: pb.AlarmType_NOSPACE,
		}}); err != nil && ctx.Err() == nil {
			s.lg.Error("raise NOSPACE alarm", "err", err)
		}
	}
	return rpctypes.ErrGRPCNoSpace
}

// MeasureSpace measures the database's size for the quota and returns it
// (the member's quota loop calls it every quotaCheckInterval).
func (s *Server) MeasureSpace() int64 { return s.quota.remeasure(s.liveDBSize) }

// QuotaSize is the database's size as the quota sees it: measured, plus
// what was committed since, plus what admitted requests may still add.
func (s *Server) QuotaSize() int64 { return s.quota.size() }

// QuotaReserved is the cost of the requests admitted and not yet done.
func (s *Server) QuotaReserved() int64 { return s.quota.reserved.Load() }

// liveDBSize is dbSize's size: what the database holds, flushed or not.
func (s *Server) liveDBSize() int64 {
	size, _ := s.dbSize()
	return size
}
