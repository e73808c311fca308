package server

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/lease"
	"github.com/metastore-dev/metastore/server/apply"
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
	// every one of them.
	res, err := l.s.proposeAuthorized(ctx, &apply.Request{LeaseRevoke: r}, func(id identity) error {
		return l.s.authorizeLease(ctx, id, auth.PermWrite, r.ID)
	})
	if err != nil {
		return nil, err
	}
	out := res.Resp.(*pb.LeaseRevokeResponse)
	l.s.fillHeader(out.Header)
	return out, nil
}

// LeaseKeepAlive answers each request with the lease's TTL after renewing
// it, or TTL 0 if the lease does not exist (an expired lease is answered
// once its revocation is applied, as etcd).
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
		// The header is taken before the renewal, as etcd's: its revision
		// is never newer than the state the renewal saw.
		resp := &pb.LeaseKeepAliveResponse{ID: req.ID, Header: &pb.ResponseHeader{}}
		l.s.fillHeader(resp.Header)
		// As etcd's: renewing keeps the lease's keys alive, so it needs
		// WRITE on every one of them; an error ends the stream.
		id, err := l.s.identify(ctx)
		if err == nil {
			err = l.s.authorizeLease(ctx, id, auth.PermWrite, req.ID)
		}
		if err != nil {
			return toGRPCError(err)
		}
		ttl, err := l.s.lessor.Renew(ctx, req.ID)
		if errors.Is(err, lease.ErrLeaseNotFound) {
			ttl, err = 0, nil
		}
		if err != nil {
			return toGRPCError(err)
		}
		resp.TTL = ttl
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func (l *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	s := l.s
	resp := &pb.LeaseTimeToLiveResponse{Header: &pb.ResponseHeader{}, ID: r.ID, TTL: -1}
	// As etcd's: an authenticated user; listing the keys needs READ on each.
	err := s.readAuthorized(ctx, func(id identity) error {
		if id.rev != 0 && id.user == "" {
			return auth.ErrUserEmpty
		}
		if !r.Keys {
			return nil
		}
		return s.authorizeLease(ctx, id, auth.PermRead, r.ID)
	}, func() error {
		info, ok := s.lessor.Lookup(r.ID)
		if !ok {
			return nil
		}
		// etcd truncates the remaining time to whole seconds.
		resp.TTL = int64(info.Remaining.Seconds())
		resp.GrantedTTL = info.TTL
		if !r.Keys {
			return nil
		}
		tx, err := s.store.Read()
		if err != nil {
			return err
		}
		defer tx.End()
		resp.Keys, err = tx.LeaseKeys(r.ID)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.fillHeader(resp.Header)
	return resp, nil
}

func (l *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	s := l.s
	infos := s.lessor.Leases()
	// As etcd's: READ on the keys of every lease, unless root.
	id, err := s.identify(ctx)
	if err != nil {
		return nil, toGRPCError(err)
	}
	var keys [][]byte
	if id.rev != 0 && id.user != "" && s.auth.IsAdmin(id.user) != nil {
		for _, info := range infos {
			keys = append(keys, s.leaseKeysOf(info.ID)...)
		}
	}
	if err := s.authorizeLeaseKeysAs(ctx, id, auth.PermRead, keys); err != nil {
		return nil, toGRPCError(err)
	}
	resp := &pb.LeaseLeasesResponse{Header: &pb.ResponseHeader{}, Leases: make([]*pb.LeaseStatus, len(infos))}
	for i := range infos {
		resp.Leases[i] = &pb.LeaseStatus{ID: infos[i].ID}
	}
	s.fillHeader(resp.Header)
	return resp, nil
}

// authorizeLease is etcd's check of a lease's keys: perm on every key
// attached to lease leaseID unless the caller is root. The keys are read
// only when the check needs them, so with auth disabled a keep-alive costs
// no store read.
func (s *Server) authorizeLease(ctx context.Context, id identity, perm auth.Perm, leaseID int64) error {
	var keys [][]byte
	if id.rev != 0 && id.user != "" && s.auth.IsAdmin(id.user) != nil {
		keys = s.leaseKeysOf(leaseID)
	}
	return s.authorizeLeaseKeysAs(ctx, id, perm, keys)
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

// Lease expiry and checkpoints: the lessor reports; these loops propose.

// maxPendingRevokes bounds the revocations in flight at once (etcd's).
const maxPendingRevokes = 16

// maxCheckpointBatch is how many checkpoints go in one request (etcd's).
const maxCheckpointBatch = 1000

// runLeaseExpiry proposes the revocation of every lease the lessor reports
// expired; the lessor already limits them to the configured rate.
func (s *Server) runLeaseExpiry(ctx context.Context) {
	sem := make(chan struct{}, maxPendingRevokes)
	var wg sync.WaitGroup
	defer wg.Wait()
	lg := s.lg.With("component", "lease")
	for {
		var ids []int64
		select {
		case ids = <-s.lessor.Expired():
		case <-ctx.Done():
			return
		}
		for _, id := range ids {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				res, err := s.loop.Propose(ctx, &apply.Request{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}})
				if err == nil {
					err = res.Err
				}
				if err == nil {
					s.metrics.leaseExpired.Inc()
				}
				// Not found: revoked by a client meanwhile. Anything else is
				// retried when the lessor reports the lease again.
				if err != nil && !errors.Is(err, apply.ErrLeaseNotFound) && ctx.Err() == nil {
					lg.Warn("failed to revoke expired lease", "lease-id", id, "err", err)
				}
			}()
		}
	}
}

// runLeaseCheckpoints persists remaining TTLs: first once the restart grace
// has passed (so the grace, not earned by any renewal, is consumed durably),
// then every checkpoint interval.
func (s *Server) runLeaseCheckpoints(ctx context.Context) {
	wait := s.cfg.Lease.RestartGrace + time.Second
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := s.checkpointLeases(ctx); err != nil && ctx.Err() == nil {
			s.lg.Warn("lease checkpoint failed", "component", "lease", "err", err)
		}
		wait = s.cfg.Lease.CheckpointInterval
	}
}

// checkpointLeases proposes every remaining TTL that changed since it was
// last persisted, in requests of up to maxCheckpointBatch.
func (s *Server) checkpointLeases(ctx context.Context) error {
	cps := s.lessor.Checkpoints()
	for len(cps) > 0 {
		n := min(len(cps), maxCheckpointBatch)
		req := &pb.LeaseCheckpointRequest{Checkpoints: make([]*pb.LeaseCheckpoint, n)}
		for i, c := range cps[:n] {
			req.Checkpoints[i] = &pb.LeaseCheckpoint{ID: c.ID, Remaining_TTL: c.RemainingTTL}
		}
		cps = cps[n:]
		res, err := s.loop.Propose(ctx, &apply.Request{LeaseCheckpoint: req})
		if err == nil {
			err = res.Err
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// readLeaseKeys returns the keys attached to a lease at the newest
// revision (nil on a read error: the auth check then sees no keys, as for
// a lease without any).
func (s *Server) readLeaseKeys(id int64) [][]byte {
	tx, err := s.store.Read()
	if err != nil {
		return nil
	}
	defer tx.End()
	keys, err := tx.LeaseKeys(id)
	if err != nil {
		return nil
	}
	return keys
}
