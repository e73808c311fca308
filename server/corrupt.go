package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/raftnode"
)

// Corruption checks, as etcd 3.6's (etcdserver/corrupt.go): members
// compare HashKV — etcd's algorithm over the key-value history, so a
// member whose stored data changed under it hashes differently from its
// peers at the same revision and compaction.
//
//   - InitialCheck (--feature-gates=InitialCorruptCheck=true): a restarting
//     member, before its Raft node starts, hashes at its own revision and
//     asks every peer for the hash at that revision; a peer with the same
//     compaction and another hash makes it refuse to start.
//   - the periodic check (--corrupt-check-time): the leader hashes, asks
//     the followers at its revision, confirms it is still the leader, and
//     raises the CORRUPT alarm for a follower that is ahead of it or whose
//     hash differs at the same compaction.
//   - the compaction hash check (--feature-gates=CompactHashCheck=true):
//     the leader compares the hashes members took at their last
//     compactions; the members outside a majority get the alarm.
//
// The CORRUPT alarm refuses writes and lease grants/revokes with etcd's
// "etcdserver: corrupt cluster" (apply.ErrCorrupt) until it is disarmed.

// peerHash is one peer's answer to a HashKV request (or why there is
// none).
type peerHash struct {
	id   uint64
	urls []string
	resp *pb.HashKVResponse
	err  error
}

// requestTimeout is etcd's ReqTimeout: 5s plus two election timeouts.
func (s *Server) requestTimeout() time.Duration {
	return 5*time.Second + 2*s.cfg.Cluster.ElectionTimeout
}

// peerHashKV is the peer service's HashKV (etcd's /members/hashkv): the
// hash of this member's store at the requested revision.
func (s *Server) peerHashKV(ctx context.Context, raw []byte) (marshaler, error) {
	var r pb.HashKVRequest
	if err := r.Unmarshal(raw); err != nil {
		return nil, err
	}
	h, rev, err := s.hashKV(ctx, r.Revision)
	if err != nil {
		return nil, err
	}
	return &pb.HashKVResponse{
		Header:          &pb.ResponseHeader{ClusterId: s.ids.Cluster, MemberId: s.ids.Member, Revision: rev},
		Hash:            h.Hash,
		CompactRevision: h.CompactRevision,
		HashRevision:    h.Revision,
	}, nil
}

// peerHashes asks every other member with peer URLs for its HashKV at rev,
// all at once.
func (s *Server) peerHashes(ctx context.Context, rev int64) []*peerHash {
	var out []*peerHash
	for _, m := range s.applier.Members().Members {
		if m.ID == s.ids.Member || len(m.PeerURLs) == 0 {
			continue
		}
		out = append(out, &peerHash{id: m.ID, urls: m.PeerURLs})
	}
	var wg sync.WaitGroup
	for _, p := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, s.requestTimeout())
			defer cancel()
			var resp pb.HashKVResponse
			if p.err = s.peers.call(cctx, s.ids.Cluster, p.urls, peerHashKVMethod, &pb.HashKVRequest{Revision: rev}, &resp); p.err == nil {
				p.resp = &resp
			} else {
				s.lg.Warn("failed hash kv request", "local-member-id", raftnode.FormatID(s.ids.Member),
					"requested-revision", rev, "remote-peer-id", raftnode.FormatID(p.id), "err", p.err)
			}
		}()
	}
	wg.Wait()
	return out
}

// initialCorruptCheck is etcd's InitialCheck: run by a restarting member
// before its Raft node starts, so nothing it applies meanwhile moves its
// revision. Peers that are behind, compacted past it, or unreachable are
// skipped (as etcd's), so a member that starts alone is not held up.
func (s *Server) initialCorruptCheck(ctx context.Context) error {
	self := raftnode.FormatID(s.ids.Member)
	s.lg.Info("starting initial corruption check", "local-member-id", self, "timeout", s.requestTimeout())
	h, _, err := s.hashKV(ctx, 0)
	if err != nil {
		return fmt.Errorf("%s failed to fetch hash (%w)", self, err)
	}
	mismatch := 0
	for _, p := range s.peerHashes(ctx, h.Revision) {
		attrs := []any{"local-member-id", self, "local-member-revision", h.Revision,
			"local-member-compact-revision", h.CompactRevision, "local-member-hash", h.Hash,
			"remote-peer-id", raftnode.FormatID(p.id), "remote-peer-endpoints", p.urls}
		switch {
		case p.resp != nil && p.resp.Hash == h.Hash:
		case p.resp != nil && p.resp.CompactRevision == h.CompactRevision:
			s.lg.Warn("found different hash values from remote peer", append(attrs, "remote-peer-hash", p.resp.Hash)...)
			mismatch++
		case p.resp != nil:
			s.lg.Warn("found different compact revision values from remote peer",
				append(attrs, "remote-peer-compact-revision", p.resp.CompactRevision, "remote-peer-hash", p.resp.Hash)...)
		case rpctypes.Error(p.err) == rpctypes.ErrFutureRev:
			s.lg.Warn("cannot fetch hash from slow remote peer", attrs...)
		case rpctypes.Error(p.err) == rpctypes.ErrCompacted:
			s.lg.Warn("cannot fetch hash from remote peer; local member is behind", attrs...)
		}
	}
	if mismatch > 0 {
		return fmt.Errorf("%s found data inconsistency with peers", self)
	}
	s.lg.Info("initial corruption checking passed; no corruption", "local-member-id", self)
	return nil
}

// runCorruptChecks runs the leader's periodic checks until ctx ends.
func (s *Server) runCorruptChecks(ctx context.Context) {
	cl := s.cfg.Cluster
	if cl.CorruptCheckTime > 0 {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.lg.Info("enabled corruption checking", "local-member-id", raftnode.FormatID(s.ids.Member), "interval", cl.CorruptCheckTime)
			t := time.NewTicker(cl.CorruptCheckTime)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if !s.node.IsLeader() {
					continue
				}
				if err := s.periodicCorruptCheck(ctx); err != nil && ctx.Err() == nil {
					s.lg.Warn("failed to check hash KV", "err", err)
				}
			}
		}()
	}
	if cl.CompactHashCheck {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			var checked int64
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(cl.CompactHashCheckTime):
				}
				if s.node.IsLeader() {
					checked = s.compactHashCheck(ctx, checked)
				}
			}
		}()
	}
}

// periodicCorruptCheck is etcd's PeriodicCheck, on the leader.
func (s *Server) periodicCorruptCheck(ctx context.Context) error {
	h, _, err := s.hashKV(ctx, 0)
	if err != nil {
		return err
	}
	peers := s.peerHashes(ctx, h.Revision)
	// Still the leader, with everything committed applied: a follower's
	// revision past ours would then be one the cluster never committed.
	rctx, cancel := context.WithTimeout(ctx, s.requestTimeout())
	_, err = s.node.ReadIndex(rctx)
	cancel()
	if err != nil {
		return err
	}
	h2, rev2, err := s.hashKV(ctx, 0)
	if err != nil {
		return err
	}
	alarmed := false
	mismatch := func(id uint64) {
		if !alarmed {
			alarmed = true
			s.triggerCorruptAlarm(ctx, id)
		}
	}
	if h2.Hash != h.Hash && h2.Revision == h.Revision && h2.CompactRevision == h.CompactRevision {
		s.lg.Warn("found hash mismatch", "revision-1", h.Revision, "compact-revision-1", h.CompactRevision, "hash-1", h.Hash,
			"revision-2", h2.Revision, "compact-revision-2", h2.CompactRevision, "hash-2", h2.Hash)
		mismatch(s.ids.Member)
	}
	checked := 0
	for _, p := range peers {
		if p.resp == nil {
			continue
		}
		checked++
		peer := raftnode.FormatID(p.id)
		if p.resp.Header.Revision > rev2 {
			s.lg.Warn("revision from follower must be less than or equal to leader's",
				"leader-revision", rev2, "follower-revision", p.resp.Header.Revision, "follower-peer-id", peer)
			mismatch(p.id)
		}
		if p.resp.CompactRevision > h2.CompactRevision {
			s.lg.Warn("compact revision from follower must be less than or equal to leader's",
				"leader-compact-revision", h2.CompactRevision, "follower-compact-revision", p.resp.CompactRevision, "follower-peer-id", peer)
			mismatch(p.id)
		}
		if p.resp.CompactRevision == h.CompactRevision && p.resp.Hash != h.Hash {
			s.lg.Warn("same compact revision then hashes must match",
				"leader-compact-revision", h2.CompactRevision, "leader-hash", h.Hash,
				"follower-compact-revision", p.resp.CompactRevision, "follower-hash", p.resp.Hash, "follower-peer-id", peer)
			mismatch(p.id)
		}
	}
	s.lg.Info("finished peer corruption check", "number-of-peers-checked", checked)
	return nil
}

// compactHashCheck is etcd's CompactHashCheck, on the leader: for the
// newest compaction hash above checked that every member answers at the
// same compaction, the members outside the majority's hash get the
// CORRUPT alarm (member 0, the whole cluster, when there is no majority).
// It returns the newest revision checked on every member.
func (s *Server) compactHashCheck(ctx context.Context, checked int64) int64 {
	hashes := s.store.CompactionHashes()
	slices.Reverse(hashes) // newest first
	for _, h := range hashes {
		if h.Revision <= checked {
			break
		}
		peers := s.peerHashes(ctx, h.Revision)
		if len(peers) == 0 {
			continue
		}
		if done, ok := s.checkCompactHashes(ctx, h, peers); ok {
			return max(checked, done)
		}
	}
	return checked
}

// checkCompactHashes groups the members by their hash at leader's
// compaction; ok is false when some peer could not be compared (then the
// next older hash is tried, as etcd does).
func (s *Server) checkCompactHashes(ctx context.Context, leader mvcc.KVHash, peers []*peerHash) (int64, bool) {
	byHash := map[uint32][]uint64{leader.Hash: {s.ids.Member}}
	compared := 0
	for _, p := range peers {
		if p.resp == nil || p.resp.CompactRevision != leader.CompactRevision {
			s.lg.Warn("Skipped peer's hash", "number-of-peers", len(peers), "leader-id", raftnode.FormatID(s.ids.Member),
				"peer-id", raftnode.FormatID(p.id))
			continue
		}
		compared++
		byHash[p.resp.Hash] = append(byHash[p.resp.Hash], p.id)
	}
	if len(byHash) == 1 {
		if compared == len(peers) {
			s.lg.Info("successfully checked hash on whole cluster", "number-of-peers-checked", compared,
				"revision", leader.Revision, "compactRevision", leader.CompactRevision)
			return leader.Revision, true
		}
		s.lg.Warn("skipped revision in compaction hash check; was not able to check all peers",
			"number-of-peers-checked", compared, "number-of-peers", len(peers), "revision", leader.Revision)
		return 0, false
	}
	quorum := (len(peers)+1)/2 + 1
	majority := false
	for h, ids := range byHash {
		if len(ids) >= quorum {
			majority = true
			delete(byHash, h)
			break
		}
	}
	if !majority {
		s.lg.Error("Detected compaction hash mismatch but cannot identify the corrupted members, so intentionally set the memberID as 0",
			"leader-id", raftnode.FormatID(s.ids.Member), "leader-revision", leader.Revision, "leader-hash", leader.Hash)
		s.triggerCorruptAlarm(ctx, 0)
	}
	for h, ids := range byHash {
		if majority {
			for _, id := range ids {
				s.triggerCorruptAlarm(ctx, id)
			}
		}
		s.lg.Error("Detected compaction hash mismatch", "leader-id", raftnode.FormatID(s.ids.Member),
			"leader-revision", leader.Revision, "leader-compact-revision", leader.CompactRevision,
			"leader-hash", leader.Hash, "peer-hash", h, "quorum-exist", majority)
	}
	return 0, true // checked again next time, as etcd's
}

// triggerCorruptAlarm proposes the CORRUPT alarm for member id (etcd's
// triggerCorruptAlarm).
func (s *Server) triggerCorruptAlarm(ctx context.Context, id uint64) {
	pctx, cancel := context.WithTimeout(ctx, s.requestTimeout())
	defer cancel()
	res, err := s.proposer.Propose(pctx, &apply.Request{Alarm: &pb.AlarmRequest{
		Action: pb.AlarmRequest_ACTIVATE, MemberID: id, Alarm: pb.AlarmType_CORRUPT,
	}})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		s.lg.Error("raise CORRUPT alarm", "member-id", raftnode.FormatID(id), "err", err)
		return
	}
	s.lg.Warn("raised the CORRUPT alarm", "member-id", raftnode.FormatID(id))
}

// hashKV is the store's HashKV, timed into etcd's
// etcd_mvcc_hash_rev_duration_seconds, which etcd's HashByRev feeds for
// the RPC and the corruption checks alike.
func (s *Server) hashKV(ctx context.Context, rev int64) (mvcc.KVHash, int64, error) {
	start := time.Now()
	h, r, err := s.store.HashKV(ctx, rev)
	if err == nil {
		s.metrics.ObserveHashKV(time.Since(start))
	}
	return h, r, err
}
