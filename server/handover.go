package server

import (
	"context"
	"time"

	"github.com/metastore-dev/metastore/server/raftnode"
)

// transferLeadership hands leadership to the voting member this one has
// been connected to longest, before a leader stops gracefully (etcd's
// TransferLeadership in EtcdServer.Stop, with longestConnected): the
// cluster has a new leader at once, in the next term, instead of after an
// election timeout. Nothing happens on a follower, on a single member or
// when no peer is connected; a transfer that does not finish within etcd's
// request timeout is given up and the member stops anyway.
func (s *Server) transferLeadership() {
	if s.node == nil || s.health == nil || !s.node.IsLeader() {
		return
	}
	var transferee uint64
	var oldest time.Time
	for _, m := range s.applier.Members().Voting() {
		if m.ID == s.ids.Member {
			continue
		}
		if a := s.health.ActiveSince(m.ID); !a.IsZero() && (transferee == 0 || a.Before(oldest)) {
			transferee, oldest = m.ID, a
		}
	}
	if transferee == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second+2*s.cfg.Cluster.ElectionTimeout)
	defer cancel()
	start := time.Now()
	if err := s.node.TransferLeadership(ctx, transferee); err != nil {
		s.lg.Warn("leadership transfer before stopping failed", "transferee", raftnode.FormatID(transferee), "err", err)
		return
	}
	s.lg.Info("leadership transferred before stopping", "transferee", raftnode.FormatID(transferee), "took", time.Since(start))
}
