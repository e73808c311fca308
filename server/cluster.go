package server

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// clusterServer implements etcd's Cluster service for a single member.
// Membership changes arrive with clustering (go.etcd.io/raft/v3).
type clusterServer struct {
	pb.UnimplementedClusterServer
	s *Server
}

var _ pb.ClusterServer = (*clusterServer)(nil)

// MemberList needs an authenticated caller when auth is enabled, as etcd's.
func (c *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	s := c.s
	if err := s.requireUser(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	// NB: etcd's MemberList header carries no revision.
	hdr := &pb.ResponseHeader{ClusterId: s.ids.cluster, MemberId: s.ids.member, RaftTerm: s.ids.term}
	clientURLs := s.cfg.Server.AdvertiseClientURLs
	if len(clientURLs) == 0 {
		clientURLs = s.advertisedListenURLs()
	}
	return &pb.MemberListResponse{
		Header: hdr,
		Members: []*pb.Member{{
			ID:         s.ids.member,
			Name:       s.cfg.Name,
			PeerURLs:   s.cfg.Server.AdvertisePeerURLs,
			ClientURLs: clientURLs,
		}},
	}, nil
}

// advertisedListenURLs are the listen URLs with the ports actually bound
// (port 0 in the config picks one).
func (s *Server) advertisedListenURLs() []string {
	out := make([]string, len(s.addrs))
	for i, a := range s.addrs {
		out[i] = "http://" + a
	}
	return out
}
