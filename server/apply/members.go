package apply

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/mvcc"
)

// Membership errors, as etcd's membership package names them; the server
// maps them to etcd's rpctypes.
var (
	ErrIDRemoved        = errors.New("membership: ID removed")
	ErrIDNotFound       = errors.New("membership: ID not found")
	ErrIDExists         = errors.New("membership: ID exists")
	ErrPeerURLExists    = errors.New("membership: peerURL exists")
	ErrMemberNotLearner = errors.New("membership: can only promote a learner member")
	ErrTooManyLearners  = errors.New("membership: too many learner members in cluster")
)

// ConfChangeType is the kind of a membership change.
type ConfChangeType uint8

// The membership changes etcd makes through raft configuration changes.
const (
	ConfChangeAddMember ConfChangeType = iota + 1
	ConfChangeAddLearner
	ConfChangeRemoveMember
	ConfChangeUpdateMember
	ConfChangePromoteMember
)

// ConfChange is one membership change. etcd does not carry these in an
// InternalRaftRequest but as raft configuration-change entries (node id plus
// a JSON context); a Raft log will carry this the same way, beside Request.
type ConfChange struct {
	Type ConfChangeType
	// ID is the member's id; for an add it is chosen before the change is
	// proposed (Apply draws no random numbers).
	ID uint64
	// PeerURLs are the new member's (add) or the new (update) peer URLs.
	PeerURLs []string
}

// Membership is the cluster's member set: immutable once published, so
// readers outside the applier take it without a lock.
type Membership struct {
	// Members are sorted by ID. Each carries ID, PeerURLs and IsLearner;
	// name and client URLs are what a member publishes when it starts, so
	// the server fills them in for itself and the others have none.
	Members []*pb.Member
	// Removed are the ids of removed members, sorted: they can never
	// return.
	Removed []uint64
}

// Member returns the member with id, or nil.
func (m *Membership) Member(id uint64) *pb.Member {
	i, ok := slices.BinarySearchFunc(m.Members, id, func(x *pb.Member, id uint64) int { return cmpID(x.ID, id) })
	if !ok {
		return nil
	}
	return m.Members[i]
}

// IsRemoved reports whether id belonged to a removed member.
func (m *Membership) IsRemoved(id uint64) bool {
	_, ok := slices.BinarySearch(m.Removed, id)
	return ok
}

// Voting returns the members that are not learners, sorted by ID.
func (m *Membership) Voting() []*pb.Member {
	var out []*pb.Member
	for _, x := range m.Members {
		if !x.IsLearner {
			out = append(out, x)
		}
	}
	return out
}

func cmpID(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

const (
	metaMembers        = "members"
	metaMembersRemoved = "members_removed"
)

// Members returns the current member set.
func (a *Applier) Members() *Membership { return a.members.Load() }

// loadMembers reads the member set; on a data directory that has none (its
// first start, or one made before membership changes existed) it stores a
// one-member set of self.
func loadMembers(s *mvcc.Store, self *pb.Member) (*Membership, error) {
	raw, err := s.Meta(metaMembers)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		if self == nil {
			return &Membership{}, nil
		}
		m := &Membership{Members: []*pb.Member{{ID: self.ID, PeerURLs: slices.Clone(self.PeerURLs)}}}
		b, err := s.NewBatch()
		if err != nil {
			return nil, err
		}
		if err := writeMembers(b, m); err != nil {
			b.Abort()
			return nil, err
		}
		if err := b.Commit(); err != nil {
			return nil, err
		}
		return m, nil
	}
	var list pb.MemberListResponse
	if err := list.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("apply: decode members: %w", err)
	}
	m := &Membership{Members: list.Members}
	rawRemoved, err := s.Meta(metaMembersRemoved)
	if err != nil {
		return nil, err
	}
	if len(rawRemoved)%8 != 0 {
		return nil, fmt.Errorf("apply: removed members: bad length %d", len(rawRemoved))
	}
	for i := 0; i < len(rawRemoved); i += 8 {
		m.Removed = append(m.Removed, binary.BigEndian.Uint64(rawRemoved[i:]))
	}
	return m, nil
}

// ClearMembers forgets the member set, so that the next start makes a new
// one-member cluster (snapshot restore).
func ClearMembers(b *mvcc.Batch) error {
	if err := b.DeleteMeta(metaMembers); err != nil {
		return err
	}
	// A Raft member's configuration and log go with the member set: the
	// restored store is a single node's.
	if err := b.DeleteMeta(metaRaftConfState); err != nil {
		return err
	}
	if err := b.DeleteRaftLog(); err != nil {
		return err
	}
	return b.DeleteMeta(metaMembersRemoved)
}

func writeMembers(b *mvcc.Batch, m *Membership) error {
	raw, err := (&pb.MemberListResponse{Members: m.Members}).Marshal()
	if err != nil {
		return err
	}
	if err := b.SetMeta(metaMembers, raw); err != nil {
		return err
	}
	removed := make([]byte, 0, 8*len(m.Removed))
	for _, id := range m.Removed {
		removed = binary.BigEndian.AppendUint64(removed, id)
	}
	return b.SetMeta(metaMembersRemoved, removed)
}

// ApplyConfChange applies one membership change inside batch b, refusing it
// as etcd's ValidateConfigurationChange does. The result's Resp is the
// *Membership after the change.
func (a *Applier) ApplyConfChange(b *mvcc.Batch, cc *ConfChange) Result {
	cur := a.members.Load()
	if err := cur.validate(cc, a.maxLearners); err != nil {
		return Result{Err: err}
	}
	next := cur.with(cc)
	if err := writeMembers(b, next); err != nil {
		return Result{Err: err}
	}
	a.members.Store(next)
	return Result{Resp: next}
}

func (m *Membership) validate(cc *ConfChange, maxLearners int) error {
	if m.IsRemoved(cc.ID) {
		return ErrIDRemoved
	}
	cur := m.Member(cc.ID)
	switch cc.Type {
	case ConfChangeAddMember, ConfChangeAddLearner:
		if cur != nil {
			return ErrIDExists
		}
		if m.peerURLTaken(cc.PeerURLs, 0) {
			return ErrPeerURLExists
		}
		if cc.Type == ConfChangeAddLearner {
			learners := 1
			for _, x := range m.Members {
				if x.IsLearner {
					learners++
				}
			}
			if learners > maxLearners {
				return ErrTooManyLearners
			}
		}
	case ConfChangePromoteMember:
		if cur == nil {
			return ErrIDNotFound
		}
		if !cur.IsLearner {
			return ErrMemberNotLearner
		}
	case ConfChangeRemoveMember:
		if cur == nil {
			return ErrIDNotFound
		}
	case ConfChangeUpdateMember:
		if cur == nil {
			return ErrIDNotFound
		}
		if m.peerURLTaken(cc.PeerURLs, cc.ID) {
			return ErrPeerURLExists
		}
	default:
		return fmt.Errorf("apply: unknown membership change %d", cc.Type)
	}
	return nil
}

// peerURLTaken reports whether a member other than except has one of urls.
func (m *Membership) peerURLTaken(urls []string, except uint64) bool {
	for _, x := range m.Members {
		if x.ID == except {
			continue
		}
		for _, u := range x.PeerURLs {
			if slices.Contains(urls, u) {
				return true
			}
		}
	}
	return false
}

// with returns the member set after the (validated) change cc.
func (m *Membership) with(cc *ConfChange) *Membership {
	next := &Membership{Members: make([]*pb.Member, 0, len(m.Members)+1), Removed: m.Removed}
	for _, x := range m.Members {
		if x.ID != cc.ID {
			next.Members = append(next.Members, x)
			continue
		}
		switch cc.Type {
		case ConfChangeRemoveMember:
			next.Removed = append(slices.Clone(m.Removed), cc.ID)
			slices.Sort(next.Removed)
		case ConfChangeUpdateMember:
			c := *x
			c.PeerURLs = slices.Clone(cc.PeerURLs)
			next.Members = append(next.Members, &c)
		case ConfChangePromoteMember:
			c := *x
			c.IsLearner = false
			next.Members = append(next.Members, &c)
		}
	}
	if cc.Type == ConfChangeAddMember || cc.Type == ConfChangeAddLearner {
		next.Members = append(next.Members, &pb.Member{ID: cc.ID, PeerURLs: slices.Clone(cc.PeerURLs), IsLearner: cc.Type == ConfChangeAddLearner})
		slices.SortFunc(next.Members, func(x, y *pb.Member) int { return cmpID(x.ID, y.ID) })
	}
	return next
}
