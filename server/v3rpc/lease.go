package v3rpc

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/lease"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/guard"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

var _ apply.Lessor = (*lease.Lessor)(nil)

// leaseServer implements etcd's Lease service.
type leaseServer struct {
	pb.UnimplementedLeaseServer
	s *Server
}

var _ pb.LeaseServer = (*leaseServer)(nil)

// grantAttempts bounds how often a grant with a server-chosen id is retried
// after hitting an id a client chose (etcd returns ErrLeaseExist then).
const grantAttempts = 3

func (l *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if err := l.s.reserveSpace(ctx, quotaLeaseOverhead); err != nil {
		return nil, err
	}
	defer l.s.quota.release(quotaLeaseOverhead)
	// As etcd's: any authenticated user may grant.
	if err := l.s.requireUser(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	// The minimum TTL is applied here, before the grant is proposed, so
	// that every member applies the same TTL whatever its own setting.
	if minTTL := int64(l.s.cfg.Lease.MinTTL / time.Second); r.TTL < minTTL {
		r.TTL = minTTL
	}
	chosen := r.ID == 0
	for attempt := 1; ; attempt++ {
		if chosen {
			r.ID = l.s.leaseIDs.next()
		}
		res, err := l.s.loop.Propose(ctx, &apply.Request{LeaseGrant: r})
		if err == nil {
			err = res.Err
		}
		if chosen && errors.Is(err, apply.ErrLeaseExist) && attempt < grantAttempts {
			continue
		}
		if err != nil {
			return nil, toGRPCError(err)
		}
		out := res.Resp.(*pb.LeaseGrantResponse)
		l.s.fillHeader(out.Header)
		return out, nil
	}
}

func (l *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	// As etcd's: revoking deletes the lease's keys, so it needs WRITE on
	// every one of them (guard.Write).
	res, err := l.s.proposeGuarded(ctx, &apply.Request{LeaseRevoke: r})
	if err != nil {
		return nil, err
	}
	out := res.Resp.(*pb.LeaseRevokeResponse)
	l.s.fillHeader(out.Header)
	return out, nil
}

// LeaseKeepAlive answers each request with the lease's TTL after renewing
// it, or TTL 0 if the lease does not exist (an expired lease is answered
// once its revocation is applied, as etcd). On the lean transport of a
// single member the stream is answered message by message by InlineStream's
// handler instead (leaseinline.go), through the same keepAliveOne.
func (l *leaseServer) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	// NB: Recv cannot be interrupted, so it runs on its own goroutine and
	// the handler returns when the server stops (etcd does the same).
	errc := make(chan error, 1)
	go func() { errc <- l.keepAlive(stream) }()
	select {
	case err := <-errc:
		return err
	case <-stream.Context().Done():
		return toGRPCError(stream.Context().Err())
	case <-l.s.stopping:
		return rpctypes.ErrGRPCStopped
	}
}

func (l *leaseServer) keepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, _, err := l.s.keepAliveOne(ctx, req, false)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// keepAliveOne answers one keep-alive request: the lease renewed and its
// TTL, TTL 0 when it does not exist. An error ends the stream. inline: the
// caller must not wait (the lean transport's reader, leaseinline.go); ok
// false then says the answer would wait, and nothing was renewed.
func (s *Server) keepAliveOne(ctx context.Context, req *pb.LeaseKeepAliveRequest, inline bool) (_ *pb.LeaseKeepAliveResponse, ok bool, _ error) {
	if inline && s.guard.Policies() {
		return nil, false, nil // a policy's hook may wait
	}
	// The header is taken before the renewal, as etcd's: its revision
	// is never newer than the state the renewal saw.
	// The response and its header in one allocation.
	out := &struct {
		resp pb.LeaseKeepAliveResponse
		hdr  pb.ResponseHeader
	}{resp: pb.LeaseKeepAliveResponse{ID: req.ID}}
	resp := &out.resp
	resp.Header = &out.hdr
	s.fillHeader(resp.Header)
	// As etcd's: renewing keeps the lease's keys alive, so it needs
	// WRITE on every one of them; an error ends the stream.
	id, err := s.guard.Identify(ctx)
	if err != nil {
		return nil, true, toGRPCError(err)
	}
	if inline && id.Rev != 0 && id.User != "" && !s.guard.LeaseExempt(id.User) {
		return nil, false, nil // the check reads every key of the lease
	}
	if err := s.guard.AuthorizeLease(ctx, id, policyabi.PermWrite, req.ID); err != nil {
		return nil, true, toGRPCError(err)
	}
	var ttl int64
	if inline {
		if ttl, ok, err = s.tryRenew(req.ID); !ok {
			return nil, false, nil
		}
	} else {
		ttl, err = s.renew(ctx, req.ID)
	}
	if errors.Is(err, lease.ErrLeaseNotFound) {
		ttl, err = 0, nil
	}
	if err != nil {
		return nil, true, toGRPCError(err)
	}
	resp.TTL = ttl
	return resp, true, nil
}

func (l *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	s := l.s
	resp := &pb.LeaseTimeToLiveResponse{Header: &pb.ResponseHeader{}, ID: r.ID, TTL: -1}
	// As etcd's: an authenticated user; listing the keys needs READ on each.
	id, err := s.authorizeTimeToLive(ctx, r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	fwd, err := s.forwardLease()
	if err != nil {
		return nil, err
	}
	var (
		found  bool
		lresp  *pb.LeaseTimeToLiveResponse
		remain int64
		grant  int64
	)
	if fwd {
		// Only the leader's lessor knows how long a lease has left.
		if lresp, err = s.leader.LeaseTimeToLive(ctx, r.ID); err != nil {
			return nil, toGRPCError(err)
		}
		found, remain, grant = lresp.TTL >= 0, lresp.TTL, lresp.GrantedTTL
	} else if err := s.LeaderLeaseBarrier(ctx); err != nil {
		return nil, toGRPCError(err)
	} else if info, ok := s.lessor.Lookup(r.ID); ok {
		// etcd truncates the remaining time to whole seconds.
		found, remain, grant = true, int64(info.Remaining.Seconds()), info.TTL
	}
	if found {
		resp.TTL = remain
		resp.GrantedTTL = grant
		if r.Keys {
			if resp.Keys, err = s.readLeaseKeysAt(r.ID); err != nil {
				return nil, toGRPCError(err)
			}
		}
	}
	for s.guard.AuthMoved(id) {
		if id, err = s.authorizeTimeToLive(ctx, r); err != nil {
			return nil, toGRPCError(err)
		}
	}
	s.fillHeader(resp.Header)
	return resp, nil
}

// renew renews a lease here, or on the leader from a follower.
func (s *Server) renew(ctx context.Context, id int64) (int64, error) {
	fwd, err := s.forwardLease()
	if err != nil {
		return 0, err
	}
	if fwd {
		return s.leader.LeaseRenew(ctx, id)
	}
	if err := s.LeaderLeaseBarrier(ctx); err != nil {
		return 0, err
	}
	return s.lessor.Renew(ctx, id)
}

// tryRenew is renew for a caller that must not wait: on a single member
// only (a cluster's renewal waits for a read round or the leader), and
// not for an expired lease whose revocation is still to be applied.
func (s *Server) tryRenew(id int64) (ttl int64, done bool, err error) {
	if s.raft != nil {
		return 0, false, nil
	}
	return s.lessor.TryRenew(id)
}

// LeaderLeaseBarrier is what etcd's leader does before it renews a lease or
// answers its TimeToLive (ensureLeadership, waitAppliedIndex): one
// linearizable read round, which confirms this member still leads and
// returns once it has applied every entry committed before the call. A new
// leader may not yet have applied a grant or a revoke its predecessor
// acknowledged; its lessor would answer "not found" for a granted lease.
// A single member (no Raft) applies before it answers: nothing to wait for.
func (s *Server) LeaderLeaseBarrier(ctx context.Context) error {
	if s.raft == nil {
		return nil
	}
	if err := s.linearizableRead(ctx); err != nil {
		return toGRPCError(err)
	}
	if !s.raft.IsLeader() {
		return rpctypes.ErrGRPCNotLeader
	}
	return nil
}

// LeaseTimeToLive answers a forwarded TimeToLive from this member's lessor
// (the leader's): TTL -1 for an unknown lease.
func (s *Server) LeaseTimeToLive(id int64) *pb.LeaseTimeToLiveResponse {
	resp := &pb.LeaseTimeToLiveResponse{Header: &pb.ResponseHeader{}, ID: id, TTL: -1}
	if info, ok := s.lessor.Lookup(id); ok {
		resp.TTL = int64(info.Remaining.Seconds())
		resp.GrantedTTL = info.TTL
	}
	s.fillHeader(resp.Header)
	return resp
}

// authorizeTimeToLive is etcd's check of TimeToLive: an authenticated
// user, and READ on every key of the lease when the keys are asked for.
func (s *Server) authorizeTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (guard.Identity, error) {
	id, err := s.guard.Identify(ctx)
	if err != nil {
		return id, err
	}
	if id.AuthEnabled() && id.User == "" {
		return id, auth.ErrUserEmpty
	}
	if !r.Keys {
		return id, nil
	}
	return id, s.guard.AuthorizeLease(ctx, id, policyabi.PermRead, r.ID)
}

// readLeaseKeysAt reads the keys attached to a lease from a new read view.
func (s *Server) readLeaseKeysAt(id int64) ([][]byte, error) {
	tx, err := s.store.Read()
	if err != nil {
		return nil, err
	}
	defer tx.End()
	return tx.LeaseKeys(id)
}

func (l *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	s := l.s
	infos := s.lessor.Leases()
	// As etcd's: READ on the keys of every lease, unless root.
	id, err := s.guard.Identify(ctx)
	if err != nil {
		return nil, toGRPCError(err)
	}
	var keys [][]byte
	if id.AuthEnabled() && id.User != "" && !s.guard.LeaseExempt(id.User) {
		for _, info := range infos {
			keys = append(keys, s.guard.LeaseKeys(info.ID)...)
		}
	}
	if err := s.guard.AuthorizeLeaseKeys(ctx, id, policyabi.PermRead, keys); err != nil {
		return nil, toGRPCError(err)
	}
	resp := &pb.LeaseLeasesResponse{Header: &pb.ResponseHeader{}, Leases: make([]*pb.LeaseStatus, len(infos))}
	for i := range infos {
		resp.Leases[i] = &pb.LeaseStatus{ID: infos[i].ID}
	}
	s.fillHeader(resp.Header)
	return resp, nil
}

// leaseIDGen hands out lease ids for grants without one, as etcd's request
// id generator: the member id's low bits on top, then a counter that
// starts at the current time in milliseconds, so ids stay unique across
// restarts without persisting the counter. The sign bit is always clear.
type leaseIDGen struct {
	prefix uint64
	suffix atomic.Uint64
}

const (
	idSuffixBits = 48
	idSuffixMask = 1<<idSuffixBits - 1
)

func newLeaseIDGen(member uint64, now time.Time) *leaseIDGen {
	g := &leaseIDGen{prefix: (member << idSuffixBits) & (1<<63 - 1)}
	// 40 bits of milliseconds (34 years) followed by 8 bits of count.
	g.suffix.Store((uint64(now.UnixMilli()) & (1<<40 - 1)) << 8)
	return g
}

func (g *leaseIDGen) next() int64 {
	for {
		if id := int64(g.prefix | g.suffix.Add(1)&idSuffixMask); id != 0 {
			return id
		}
	}
}
