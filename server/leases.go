package server

import (
	"context"
	"errors"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/lease"
	"github.com/metastore-dev/metastore/server/apply"
)

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
		if !s.rpc.IsLeader() {
			// Only the leader's lessor expires leases (as etcd's); a
			// follower's clocks restart when it is promoted.
			continue
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
				res, err := s.proposer.Propose(ctx, &apply.Request{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}})
				if err == nil {
					err = res.Err
				}
				if err == nil {
					s.metrics.LeaseExpired()
					s.expiredRevokes.Add(1)
				}
				// Not found: revoked by a client meanwhile. Anything else is
				// retried when the lessor reports the lease again.
				if err != nil && !errors.Is(err, lease.ErrLeaseNotFound) && ctx.Err() == nil {
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
	if !s.rpc.IsLeader() {
		return nil // the leader's lessor is the one that knows
	}
	cps := s.lessor.Checkpoints()
	for len(cps) > 0 {
		n := min(len(cps), maxCheckpointBatch)
		req := &pb.LeaseCheckpointRequest{Checkpoints: make([]*pb.LeaseCheckpoint, n)}
		for i, c := range cps[:n] {
			req.Checkpoints[i] = &pb.LeaseCheckpoint{ID: c.ID, Remaining_TTL: c.RemainingTTL}
		}
		cps = cps[n:]
		res, err := s.proposer.Propose(ctx, &apply.Request{LeaseCheckpoint: req})
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
	if keys, err := tx.LeaseKeys(id); err == nil {
		return keys
	}
	return nil
}
