package apply

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/mvcc"
)

// Request is what enters Apply: etcd's own InternalRaftRequest, with exactly
// one operation set. Being a protobuf, it can later travel through a Raft log
// unchanged.
type Request = pb.InternalRaftRequest

// Result is the outcome of applying one Request.
type Result struct {
	// Resp is the etcd response message (e.g. *pb.PutResponse); nil on error.
	Resp any
	// Err is a domain error (see the Err* values and mvcc's); the server maps
	// it to etcd's rpctypes.
	Err error
	// Compacted, for a physical compaction, closes when the removal of
	// obsolete versions is done.
	Compacted <-chan struct{}
	// AuthRevision, for Authenticate, is the auth revision the token is
	// issued at.
	AuthRevision uint64
}

// Applier applies requests to the store. Apply is deterministic given the
// store's state: no clocks, randomness or I/O besides the batch.
type Applier struct {
	observer    atomic.Pointer[ApplyObserver] // applytime.go
	leases      Lessor
	minLeaseTTL int64
	pending     pendingLeases // lease changes of the batch being applied
	auth        *auth.Store
	// tenants is replaced whole by SetTenants (on the apply goroutine);
	// readers outside the applier load it.
	tenants atomic.Pointer[tenantUsage]
	// alarms is replaced, never mutated, so readers outside the applier
	// (Status, health) need no lock.
	alarms atomic.Pointer[[]*pb.AlarmMember]
	// members and versions are replaced, never mutated, as alarms.
	members     atomic.Pointer[Membership]
	maxLearners int
	versions    atomic.Pointer[Versions]
	// initialVersion is Options.ClusterVersion (for Reload).
	initialVersion string
	// stats counts mvcc operations as etcd does (mvccstats.go).
	stats MVCCStats
}

// Options wire the optional collaborators of an Applier.
type Options struct {
	// Leases is the lease registry; nil means none (every put with a lease
	// fails, grants are applied to the store only).
	Leases Lessor
	// MinLeaseTTL is the smallest TTL, in seconds, a lease is granted with;
	// shorter requests are raised to it (etcd derives it from its election
	// timeout: 2s by default).
	MinLeaseTTL int64
	// Auth is the auth store the Auth requests mutate; nil refuses them.
	Auth *auth.Store
	// Tenants are counted: live keys and bytes per prefix, kept with every
	// write and persisted with it.
	Tenants []Tenant
	// Self is this member (ID and peer URLs): a store without a member set
	// gets a one-member set of it. Nil leaves such a store without members.
	Self *pb.Member
	// MaxLearners caps the learner members (etcd's --max-learners).
	MaxLearners int
	// ClusterVersion is the cluster version ("major.minor.0") of a store
	// that has none recorded yet.
	ClusterVersion string
}

const metaAlarms = "alarms"

// New loads the applier's persistent state (alarms, members, versions) from
// the store.
func New(s *mvcc.Store, opts Options) (*Applier, error) {
	a := &Applier{leases: opts.Leases, minLeaseTTL: opts.MinLeaseTTL, auth: opts.Auth, maxLearners: opts.MaxLearners, initialVersion: opts.ClusterVersion}
	members, err := loadMembers(s, opts.Self)
	if err != nil {
		return nil, err
	}
	a.members.Store(members)
	versions, err := loadVersions(s, opts.ClusterVersion)
	if err != nil {
		return nil, err
	}
	a.versions.Store(versions)
	if len(opts.Tenants) > 0 {
		u, err := loadTenants(s, opts.Tenants)
		if err != nil {
			return nil, err
		}
		a.tenants.Store(u)
	}
	alarms, err := loadAlarms(s)
	if err != nil {
		return nil, err
	}
	a.alarms.Store(&alarms)
	return a, nil
}

func loadAlarms(s *mvcc.Store) ([]*pb.AlarmMember, error) {
	raw, err := s.Meta(metaAlarms)
	if err != nil || raw == nil {
		return []*pb.AlarmMember{}, err
	}
	var ar pb.AlarmResponse
	if err := ar.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("apply: decode alarms: %w", err)
	}
	return ar.Alarms, nil
}

// Alarms returns the active alarms.
func (a *Applier) Alarms() []*pb.AlarmMember { return *a.alarms.Load() }

// HasAlarm reports whether an alarm of type t is active.
func (a *Applier) HasAlarm(t pb.AlarmType) bool { return a.hasAlarm(t) }

func (a *Applier) hasAlarm(t pb.AlarmType) bool {
	for _, m := range *a.alarms.Load() {
		if m.Alarm == t {
			return true
		}
	}
	return false
}

// applyOne applies one request inside batch b (Apply times it).
func (a *Applier) applyOne(b *mvcc.Batch, r *Request) Result {
	if a.authStale(r) {
		return Result{Err: ErrAuthRetry}
	}
	if isAuth(r) {
		return a.applyAuth(b, r)
	}
	if refusedWhenCorrupt(r) && a.hasAlarm(pb.AlarmType_CORRUPT) {
		return Result{Err: ErrCorrupt}
	}
	switch {
	case r.Put != nil:
		if a.hasAlarm(pb.AlarmType_NOSPACE) {
			return Result{Err: ErrNoSpace}
		}
		tx := b.Txn()
		defer tx.End()
		if err := a.checkPut(tx, r.Put); err != nil {
			a.countPut(r.Put, nil, err)
			return Result{Err: err}
		}
		resp, err := put(a.writeView(tx), r.Put)
		a.countPut(r.Put, tx.Changes(), err)
		return a.counted(b, tx, resp, err)
	case r.DeleteRange != nil:
		tx := b.Txn()
		defer tx.End()
		resp, err := deleteRange(tx, r.DeleteRange)
		a.countDelete(r.DeleteRange)
		return a.counted(b, tx, resp, err)
	case r.Txn != nil:
		if a.hasAlarm(pb.AlarmType_NOSPACE) && txnHasPut(r.Txn) {
			return Result{Err: ErrNoSpace}
		}
		tx := b.Txn()
		defer tx.End()
		resp, err := a.txn(context.Background(), a.writeView(tx), r.Txn)
		return a.counted(b, tx, resp, err)
	case r.Compaction != nil:
		done, err := b.Compact(r.Compaction.Revision)
		if err != nil {
			return Result{Err: err}
		}
		res := Result{Resp: &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: b.Rev()}}}
		if r.Compaction.Physical {
			res.Compacted = done
		}
		return res
	case r.Alarm != nil:
		resp, err := a.alarm(b, r.Alarm)
		return result(resp, err)
	case r.LeaseGrant != nil:
		return result(a.leaseGrant(b, r.LeaseGrant))
	case r.LeaseRevoke != nil:
		return result(a.leaseRevoke(b, r.LeaseRevoke))
	case r.LeaseCheckpoint != nil:
		return result(a.leaseCheckpoint(b, r.LeaseCheckpoint))
	case r.ClusterVersionSet != nil:
		return a.clusterVersionSet(b, r.ClusterVersionSet)
	case r.DowngradeInfoSet != nil:
		return a.downgradeInfoSet(b, r.DowngradeInfoSet)
	case r.ClusterMemberAttrSet != nil:
		return a.memberAttrSet(b, r.ClusterMemberAttrSet)
	}
	return Result{Err: fmt.Errorf("apply: unsupported request %s", r.String())}
}

// counted is result for a write: it also brings the tenants' usage up to
// date with the write's changes (every path that changes keys goes through
// it).
func (a *Applier) counted(b *mvcc.Batch, tx WriteView, resp any, err error) Result {
	if err == nil {
		err = a.tenants.Load().account(b, tx.Changes())
	}
	if err != nil {
		return Result{Err: err}
	}
	return Result{Resp: resp}
}

func result[T any](resp *T, err error) Result {
	if err != nil {
		return Result{Err: err}
	}
	return Result{Resp: resp}
}

// TxnHasPut reports whether a txn puts in any branch, nested txns included.
func TxnHasPut(rt *pb.TxnRequest) bool { return txnHasPut(rt) }

func txnHasPut(rt *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{rt.Success, rt.Failure} {
		for _, op := range ops {
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestPut:
				return true
			case *pb.RequestOp_RequestTxn:
				if txnHasPut(v.RequestTxn) {
					return true
				}
			}
		}
	}
	return false
}

func (a *Applier) alarm(b *mvcc.Batch, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	resp := &pb.AlarmResponse{Header: &pb.ResponseHeader{Revision: b.Rev()}}
	alarms := *a.alarms.Load()
	switch r.Action {
	case pb.AlarmRequest_GET:
		for _, m := range alarms {
			if r.Alarm == pb.AlarmType_NONE || m.Alarm == r.Alarm {
				resp.Alarms = append(resp.Alarms, m)
			}
		}
		return resp, nil
	case pb.AlarmRequest_ACTIVATE:
		if r.Alarm == pb.AlarmType_NONE {
			return resp, nil
		}
		for _, m := range alarms {
			if m.MemberID == r.MemberID && m.Alarm == r.Alarm {
				return resp, nil // already active
			}
		}
		m := &pb.AlarmMember{MemberID: r.MemberID, Alarm: r.Alarm}
		alarms = append(slices.Clip(alarms), m)
		resp.Alarms = []*pb.AlarmMember{m}
	case pb.AlarmRequest_DEACTIVATE:
		i := slices.IndexFunc(alarms, func(m *pb.AlarmMember) bool {
			return m.MemberID == r.MemberID && m.Alarm == r.Alarm
		})
		if i < 0 {
			return resp, nil
		}
		resp.Alarms = []*pb.AlarmMember{alarms[i]}
		alarms = slices.Delete(slices.Clone(alarms), i, i+1)
	default:
		return resp, nil
	}
	raw, err := (&pb.AlarmResponse{Alarms: alarms}).Marshal()
	if err != nil {
		return nil, err
	}
	if err := b.SetMeta(metaAlarms, raw); err != nil {
		return nil, err
	}
	a.alarms.Store(&alarms)
	return resp, nil
}
