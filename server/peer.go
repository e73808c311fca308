package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/lease"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/raftnode"
	"github.com/metastore-dev/metastore/server/v3rpc"
)

// The member's own peer service, beside raftnode's message stream on the
// peer listener: what etcd's rafthttp and peer HTTP handlers serve besides
// raft messages. Members (for a joining member to learn its ID and the
// cluster's), and the requests a follower forwards to the leader: lease
// renewals and TimeToLive (only the leader's lessor tracks them) and
// learner promotion (only the leader knows the learner's progress).
//
// Messages are etcd's protobufs, marshalled by hand, in the peer server's
// raw-bytes codec, so no generated code is needed.
const (
	peerSvc             = "metastore.server.Peer"
	peerMembers         = "/" + peerSvc + "/Members"
	peerLeaseRenew      = "/" + peerSvc + "/LeaseRenew"
	peerLeaseTimeToLive = "/" + peerSvc + "/LeaseTimeToLive"
	peerMemberPromote   = "/" + peerSvc + "/MemberPromote"
	peerHashKVMethod    = "/" + peerSvc + "/HashKV"
	mdPeerClusterID     = "metastore-cluster-id"
)

type marshaler interface{ Marshal() ([]byte, error) }

// peerMethod adapts a handler of raw request bytes to gRPC.
func peerMethod(name string, check bool, h func(s *Server, ctx context.Context, req []byte) (marshaler, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			s := srv.(*Server)
			var req []byte
			if err := dec(&req); err != nil {
				return nil, err
			}
			if check {
				md, _ := metadata.FromIncomingContext(ctx)
				v := md.Get(mdPeerClusterID)
				if len(v) != 1 || v[0] != raftnode.FormatID(s.ids.Cluster) {
					return nil, status.Error(codes.FailedPrecondition, "metastore: cluster ID mismatch")
				}
			}
			resp, err := h(s, ctx, req)
			if err != nil {
				return nil, v3rpc.GRPCError(err)
			}
			b, err := resp.Marshal()
			if err != nil {
				return nil, err
			}
			return &b, nil
		},
	}
}

var peerServiceDesc = grpc.ServiceDesc{
	ServiceName: peerSvc,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		peerMethod("Members", false, func(s *Server, _ context.Context, _ []byte) (marshaler, error) {
			return &pb.MemberListResponse{
				Header:  &pb.ResponseHeader{ClusterId: s.ids.Cluster, MemberId: s.ids.Member},
				Members: s.applier.Members().Members,
			}, nil
		}),
		peerMethod("LeaseRenew", true, func(s *Server, ctx context.Context, raw []byte) (marshaler, error) {
			var r pb.LeaseKeepAliveRequest
			if err := r.Unmarshal(raw); err != nil {
				return nil, err
			}
			if !s.node.IsLeader() {
				return nil, rpctypes.ErrGRPCNotLeader
			}
			if err := s.rpc.LeaderLeaseBarrier(ctx); err != nil {
				return nil, err
			}
			ttl, err := s.lessor.Renew(ctx, r.ID)
			if errors.Is(err, lease.ErrLeaseNotFound) {
				ttl, err = 0, nil
			}
			if err != nil {
				return nil, err
			}
			return &pb.LeaseKeepAliveResponse{ID: r.ID, TTL: ttl}, nil
		}),
		peerMethod("LeaseTimeToLive", true, func(s *Server, ctx context.Context, raw []byte) (marshaler, error) {
			var r pb.LeaseTimeToLiveRequest
			if err := r.Unmarshal(raw); err != nil {
				return nil, err
			}
			if !s.node.IsLeader() {
				return nil, rpctypes.ErrGRPCNotLeader
			}
			if err := s.rpc.LeaderLeaseBarrier(ctx); err != nil {
				return nil, err
			}
			return s.rpc.LeaseTimeToLive(r.ID), nil
		}),
		peerMethod("HashKV", true, func(s *Server, ctx context.Context, raw []byte) (marshaler, error) {
			return s.peerHashKV(ctx, raw) // corrupt.go
		}),
		peerMethod("MemberPromote", true, func(s *Server, ctx context.Context, raw []byte) (marshaler, error) {
			var r pb.MemberPromoteRequest
			if err := r.Unmarshal(raw); err != nil {
				return nil, err
			}
			// The leader's progress must know the learner: apply what is
			// committed (its addition) first.
			if _, err := s.node.ReadIndex(ctx); err != nil {
				return nil, err
			}
			res, err := s.proposer.ProposeConfChange(ctx, &apply.ConfChange{Type: apply.ConfChangePromoteMember, ID: r.ID})
			if err == nil {
				err = res.Err
			}
			if err != nil {
				return nil, err
			}
			return &pb.MemberPromoteResponse{}, nil
		}),
	},
}

// rawCodec is the peer clients' codec: *[]byte both ways, as raftnode's
// peer server codec.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("peer codec cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("peer codec cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "raftnode-frame" }

// peerClients keeps one connection per peer URL.
type peerClients struct {
	tls  *tls.Config
	dial []grpc.DialOption // added to every connection's options

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (p *peerClients) conn(raw string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.conns[raw]; c != nil {
		return c, nil
	}
	target, opts, err := raftnode.PeerDial(raw, p.tls)
	if err != nil {
		return nil, err
	}
	opts = append(append(opts, p.dial...), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	c, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, err
	}
	if p.conns == nil {
		p.conns = map[string]*grpc.ClientConn{}
	}
	p.conns[raw] = c
	return c, nil
}

func (p *peerClients) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// call invokes method at the first of urls that answers.
func (p *peerClients) call(ctx context.Context, clusterID uint64, urls []string, method string, req marshaler, resp interface{ Unmarshal([]byte) error }) error {
	in, err := req.Marshal()
	if err != nil {
		return err
	}
	if clusterID != 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, mdPeerClusterID, raftnode.FormatID(clusterID))
	}
	var last error = errors.New("no peer URLs")
	for _, u := range urls {
		c, err := p.conn(u)
		if err != nil {
			last = err
			continue
		}
		var out []byte
		if err := c.Invoke(ctx, method, &in, &out); err != nil {
			if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unavailable {
				return err // the peer's own answer
			}
			last = err
			continue
		}
		return resp.Unmarshal(out)
	}
	return last
}

// leaderClient implements v3rpc.LeaderForwarder over the peer service.
type leaderClient struct{ s *Server }

func (l leaderClient) leaderURLs() ([]string, error) {
	id := l.s.node.Leader()
	if id == 0 {
		return nil, rpctypes.ErrGRPCNoLeader
	}
	m := l.s.applier.Members().Member(id)
	if m == nil {
		return nil, rpctypes.ErrGRPCNoLeader
	}
	return m.PeerURLs, nil
}

// toLeader calls method on the leader until it answers, as etcd's
// LeaseRenew forwarding: through elections and lost connections, within
// the request timeout (then etcd's timeout error). A lease's absence is an
// answer, and so is any other error of the leader's own.
func (l leaderClient) toLeader(ctx context.Context, method string, req marshaler, resp interface{ Unmarshal([]byte) error }) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second+2*l.s.cfg.Cluster.ElectionTimeout)
	defer cancel()
	for {
		changed := l.s.node.LeaderChangedNotify()
		urls, err := l.leaderURLs()
		if err == nil {
			err = l.s.peers.call(cctx, l.s.ids.Cluster, urls, method, req, resp)
			if err == nil {
				return nil
			}
			if st, ok := status.FromError(err); ok && st.Code() != codes.Unavailable && st.Err().Error() != rpctypes.ErrGRPCNotLeader.Error() && cctx.Err() == nil {
				return err
			}
		}
		select {
		case <-changed:
		case <-time.After(50 * time.Millisecond):
		case <-cctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return rpctypes.ErrGRPCTimeout
		}
	}
}

func (l leaderClient) LeaseRenew(ctx context.Context, id int64) (int64, error) {
	var resp pb.LeaseKeepAliveResponse
	if err := l.toLeader(ctx, peerLeaseRenew, &pb.LeaseKeepAliveRequest{ID: id}, &resp); err != nil {
		return 0, err
	}
	return resp.TTL, nil
}

func (l leaderClient) LeaseTimeToLive(ctx context.Context, id int64) (*pb.LeaseTimeToLiveResponse, error) {
	var resp pb.LeaseTimeToLiveResponse
	if err := l.toLeader(ctx, peerLeaseTimeToLive, &pb.LeaseTimeToLiveRequest{ID: id}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (l leaderClient) MemberPromote(ctx context.Context, id uint64) error {
	urls, err := l.leaderURLs()
	if err != nil {
		return err
	}
	var resp pb.MemberPromoteResponse
	return l.s.peers.call(ctx, l.s.ids.Cluster, urls, peerMemberPromote, &pb.MemberPromoteRequest{ID: id}, &resp)
}

// remoteMembers asks the members at urls (a joining member's
// --initial-cluster) for the cluster's ID and member list, as etcd's
// GetClusterFromRemotePeers.
func (p *peerClients) remoteMembers(ctx context.Context, urls []string) (*pb.MemberListResponse, error) {
	var last error
	for _, u := range urls {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var resp pb.MemberListResponse
		err := p.call(cctx, 0, []string{u}, peerMembers, &pb.MemberListRequest{}, &resp)
		cancel()
		if err == nil {
			return &resp, nil
		}
		last = err
	}
	return nil, fmt.Errorf("cannot fetch cluster info from peer urls: %v", last)
}
