package v3rpc

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/server/apply"
)

// Errors of etcd's reconfiguration checks (--strict-reconfig-check, on by
// default), decided before a change is proposed.
var (
	errNotEnoughStartedMembers = errors.New("etcdserver: re-configuration failed due to not enough started members")
	errUnhealthy               = errors.New("etcdserver: unhealthy cluster")
	errLearnerNotReady         = errors.New("etcdserver: can only promote a learner member which is in sync with leader")
)

// clusterServer implements etcd's Cluster service. Membership is kept by the
// applier and changed through the proposer. On a single member (the loop)
// this member is the only one that ever starts, so every other member stays
// as etcd shows a member that never joined: no name, no client URLs, never
// in sync. On a cluster member the changes are raft ConfChanges, members
// publish their names and client URLs, and the leader judges a learner's
// progress.
type clusterServer struct {
	pb.UnimplementedClusterServer
	s *Server
}

var _ pb.ClusterServer = (*clusterServer)(nil)

// MemberAdd adds a voting member or a learner, with etcd's checks in etcd's
// order: the peer URLs, the admin permission, quorum safety, then the
// validation of the applied change.
func (c *clusterServer) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	s := c.s
	urls, err := parsePeerURLs(r.PeerURLs)
	if err != nil {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	if err := s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	cc := &apply.ConfChange{Type: apply.ConfChangeAddMember, ID: newMemberID(urls, time.Now()), PeerURLs: urls}
	if r.IsLearner {
		cc.Type = apply.ConfChangeAddLearner
	}
	if err := s.mayAddMember(r.IsLearner); err != nil {
		return nil, toGRPCError(err)
	}
	if s.canAdd != nil {
		if err := s.canAdd(); err != nil {
			return nil, toGRPCError(err)
		}
	}
	ms, err := s.proposeConfChange(ctx, cc)
	if err != nil {
		return nil, err
	}
	return &pb.MemberAddResponse{
		Header:  s.clusterHeader(),
		Member:  &pb.Member{ID: cc.ID, PeerURLs: urls, IsLearner: r.IsLearner},
		Members: s.protoMembers(ms),
	}, nil
}

// MemberRemove removes a member; the last voting member (this one) cannot
// be removed.
func (c *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	s := c.s
	if err := s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	if err := s.mayRemoveMember(r.ID); err != nil {
		return nil, toGRPCError(err)
	}
	ms, err := s.proposeConfChange(ctx, &apply.ConfChange{Type: apply.ConfChangeRemoveMember, ID: r.ID})
	if err != nil {
		return nil, err
	}
	return &pb.MemberRemoveResponse{Header: s.clusterHeader(), Members: s.protoMembers(ms)}, nil
}

// MemberUpdate replaces a member's peer URLs. As etcd, the URLs are stored
// as given, unparsed.
func (c *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	s := c.s
	if err := s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	ms, err := s.proposeConfChange(ctx, &apply.ConfChange{Type: apply.ConfChangeUpdateMember, ID: r.ID, PeerURLs: r.PeerURLs})
	if err != nil {
		return nil, err
	}
	return &pb.MemberUpdateResponse{Header: s.clusterHeader(), Members: s.protoMembers(ms)}, nil
}

// MemberPromote promotes a learner that is in sync with the leader. Only
// this member ever is, and it is not a learner.
func (c *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	s := c.s
	if err := s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	// Apply what is committed first (the learner's addition may have been
	// answered by another member): etcd waits for its applied index, and
	// a follower lets the leader judge, so a fresh learner is never "not
	// found". On the leader this also makes raft's progress know it.
	if err := s.linearizableRead(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	if err := s.mayPromoteMember(r.ID); err != nil {
		return nil, toGRPCError(err)
	}
	if s.raft != nil && !s.raft.IsLeader() {
		// As etcd's: only the leader knows whether the learner is in
		// sync, so a follower forwards the promotion to it.
		if s.leader == nil || s.raft.Leader() == 0 {
			return nil, rpctypes.ErrGRPCNoLeader
		}
		if err := s.leader.MemberPromote(ctx, r.ID); err != nil {
			return nil, toGRPCError(err)
		}
		if err := s.linearizableRead(ctx); err != nil {
			return nil, toGRPCError(err)
		}
		return &pb.MemberPromoteResponse{Header: s.clusterHeader(), Members: s.protoMembers(s.applier.Members())}, nil
	}
	ms, err := s.proposeConfChange(ctx, &apply.ConfChange{Type: apply.ConfChangePromoteMember, ID: r.ID})
	if err != nil {
		return nil, err
	}
	s.metrics.etcd.promoted.Inc() // etcd counts the leader's promotions
	return &pb.MemberPromoteResponse{Header: s.clusterHeader(), Members: s.protoMembers(ms)}, nil
}

// MemberList needs an authenticated caller when auth is enabled, as etcd's.
func (c *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	s := c.s
	if err := s.requireUser(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	if r.Linearizable {
		if err := s.linearizableRead(ctx); err != nil {
			return nil, toGRPCError(err)
		}
	}
	return &pb.MemberListResponse{Header: s.clusterHeader(), Members: s.protoMembers(s.applier.Members())}, nil
}

// clusterHeader is the Cluster service's header: etcd's carries no revision.
func (s *Server) clusterHeader() *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: s.ids.cluster, MemberId: s.ids.member, RaftTerm: s.raftTerm()}
}

func (s *Server) proposeConfChange(ctx context.Context, cc *apply.ConfChange) (*apply.Membership, error) {
	res, err := s.loop.ProposeConfChange(ctx, cc)
	if err != nil {
		return nil, toGRPCError(err)
	}
	if res.Err != nil {
		return nil, toGRPCError(res.Err)
	}
	return res.Resp.(*apply.Membership), nil
}

// protoMembers renders a member set as etcd lists it. This member shows the
// name and client URLs it was started with (what an etcd member publishes
// when it starts); the others never started, so they have neither.
func (s *Server) protoMembers(ms *apply.Membership) []*pb.Member {
	out := make([]*pb.Member, len(ms.Members))
	for i, m := range ms.Members {
		// A cluster member's name and client URLs are what it published
		// when it started (ClusterMemberAttrSet).
		c := &pb.Member{ID: m.ID, PeerURLs: m.PeerURLs, IsLearner: m.IsLearner, Name: m.Name, ClientURLs: m.ClientURLs}
		if m.ID == s.ids.member {
			c.Name = s.cfg.Name
			c.ClientURLs = s.cfg.Server.AdvertiseClientURLs
			if len(c.ClientURLs) == 0 {
				c.ClientURLs = s.advertisedListenURLs()
			}
		}
		out[i] = c
	}
	return out
}

// started reports whether member m has started and published itself
// (etcd's IsStarted: it has a name): on a single member only this one can.
func (s *Server) started(m *pb.Member) bool {
	return m.ID == s.ids.member || (s.raft != nil && m.Name != "")
}

// healthInterval is etcd's HealthInterval: how long a member must have
// been connected to its peers before a reconfiguration counts on them.
const healthInterval = 5 * time.Second

// connectedSince reports whether this member has been connected to member
// id since t (etcd's isConnectedSince over rafthttp's ActiveSince); a
// member is connected to itself. A single member has no peer.
func (s *Server) connectedSince(id uint64, t time.Time) bool {
	if id == s.ids.member {
		return true
	}
	if s.raft == nil || s.activeSince == nil {
		return false
	}
	a := s.activeSince(id)
	return !a.IsZero() && a.Before(t)
}

// mayAddMember is etcd's quorum check before an add (mayAddMember with
// IsReadyToAddVotingMember and isConnectedToQuorumAfterAddingNewMemberSince).
func (s *Server) mayAddMember(learner bool) error {
	if !s.cfg.Cluster.StrictReconfigCheck {
		return nil
	}
	voting := s.applier.Members().Voting()
	if !learner {
		members, started := 1, 0 // the new member counts, not started
		for _, m := range voting {
			members++
			if s.started(m) {
				started++
			}
		}
		// NB: etcd lets a one-member cluster add a voting member (to grow a
		// restored cluster). etcd then waits for it to start and loses its
		// quorum meanwhile; metastore, with no peers, keeps serving.
		if !(started == 1 && members == 2) && started < members/2+1 {
			return errNotEnoughStartedMembers
		}
	}
	if len(voting) == 1 {
		return nil
	}
	// The new member counts as not connected: the members connected for
	// etcd's health interval must make a quorum of the grown cluster.
	since := time.Now().Add(-healthInterval)
	connected := 0
	for _, m := range voting {
		if s.connectedSince(m.ID, since) {
			connected++
		}
	}
	if connected < (len(voting)+1)/2+1 {
		return errUnhealthy
	}
	return nil
}

// mayRemoveMember is etcd's quorum check before a removal: a learner may
// always go; a voting member only if the started members left keep a
// quorum, and, on a cluster, if the members connected to this one for
// etcd's health interval do (a member not connected at all may go).
func (s *Server) mayRemoveMember(id uint64) error {
	ms := s.applier.Members()
	if m := ms.Member(id); m != nil && m.IsLearner {
		return nil
	}
	if !s.cfg.Cluster.StrictReconfigCheck && (id != s.ids.member || s.raft != nil) {
		return nil // etcd skips the check; a single member, the only one running, still cannot go
	}
	members, started := 0, 0
	for _, m := range ms.Voting() {
		if m.ID == id {
			continue
		}
		members++
		if s.started(m) {
			started++
		}
	}
	if started < members/2+1 {
		return errNotEnoughStartedMembers
	}
	if s.raft != nil {
		// etcd: a member this one is not connected to is not part of the
		// active quorum, so it is safe to remove.
		if id != s.ids.member && !s.connectedSince(id, time.Now()) {
			return nil
		}
		voting := ms.Voting()
		since := time.Now().Add(-healthInterval)
		active := 0
		for _, m := range voting {
			if s.connectedSince(m.ID, since) {
				active++
			}
		}
		if active-1 < 1+(len(voting)-1)/2 {
			return errUnhealthy
		}
		return nil
	}
	if id != s.ids.member {
		return nil // a member that never connected is not part of the active quorum
	}
	// Removing this member leaves no connected member: etcd's active-quorum
	// check refuses it (the started-members check above already has).
	return errUnhealthy
}

// mayPromoteMember is etcd's check before a promotion: the member must be
// known to the leader's raft progress and in sync with it (only this member
// is), then the started members must keep a quorum with it.
func (s *Server) mayPromoteMember(id uint64) error {
	ms := s.applier.Members()
	m := ms.Member(id)
	if m == nil {
		return apply.ErrIDNotFound
	}
	// A cluster's leader checks the learner's log (raftnode); a single
	// member has no learner that could have started.
	if s.raft == nil && !s.started(m) {
		return errLearnerNotReady
	}
	if !s.cfg.Cluster.StrictReconfigCheck {
		return nil
	}
	members, started := 1, 1 // the promoted member counts as started
	for _, v := range ms.Voting() {
		members++
		if s.started(v) {
			started++
		}
	}
	if started < members/2+1 {
		return errNotEnoughStartedMembers
	}
	return nil
}

// parsePeerURLs checks and normalises peer URLs as etcd's types.NewURLs:
// at least one; http(s) with host:port and no path, or unix(s); sorted.
func parsePeerURLs(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, errors.New("no valid URLs given")
	}
	out := make([]string, len(in))
	for i, raw := range in {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			return nil, err
		}
		switch u.Scheme {
		case "http", "https":
			if _, _, err := net.SplitHostPort(u.Host); err != nil {
				return nil, fmt.Errorf("URL address does not have the form \"host:port\": %s", raw)
			}
			if u.Path != "" {
				return nil, fmt.Errorf("URL must not contain a path: %s", raw)
			}
		case "unix", "unixs":
		default:
			return nil, fmt.Errorf("URL scheme must be http, https, unix, or unixs: %s", raw)
		}
		out[i] = u.String()
	}
	slices.Sort(out)
	return out, nil
}

// newMemberID derives a new member's id as etcd does: from its sorted peer
// URLs and the current second. Adding the same URLs twice within a second
// therefore yields the same id (and etcd's "member ID already exist").
func newMemberID(sortedURLs []string, now time.Time) uint64 {
	b := []byte(strings.Join(sortedURLs, ""))
	b = fmt.Appendf(b, "%d", now.Unix())
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// advertisedListenURLs are the listen URLs with the ports actually bound
// (port 0 in the config picks one).
func (s *Server) advertisedListenURLs() []string {
	out := make([]string, len(s.addrs()))
	for i, a := range s.addrs() {
		out[i] = "http://" + a
	}
	return out
}
