package apply

import (
	"encoding/binary"
	"errors"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/metastore-dev/metastore/mvcc"
)

// SetRestoredMembers makes a restored store (`metastore snapshot restore`
// with --initial-cluster) a member of a new cluster of members, as
// etcdutl's restore does: the old member set, removed members, Raft
// configuration and log go; members (IDs, names and peer URLs, no client
// URLs: each member publishes its own when it starts) become the set.
//
// One member is written as a single node's data directory (a member set
// and no Raft state): it serves alone, or becomes a one-member cluster
// when started with peer flags. Several are written as applied up to
// index len(members) with every member a voter, which is where etcdutl
// leaves its restored members (one configuration entry per member,
// committed and snapshotted); every restored member then starts its Raft
// log empty at that same index and term 1 (raftnode adopts it), so the
// members agree on the log without a bootstrap.
func SetRestoredMembers(b *mvcc.Batch, members []*pb.Member) error {
	if len(members) == 0 {
		return errors.New("apply: a restored cluster needs at least one member")
	}
	ms := make([]*pb.Member, len(members))
	for i, m := range members {
		ms[i] = &pb.Member{ID: m.ID, Name: m.Name, PeerURLs: slices.Clone(m.PeerURLs)}
	}
	slices.SortFunc(ms, func(x, y *pb.Member) int { return cmpID(x.ID, y.ID) })
	for i := 1; i < len(ms); i++ {
		if ms[i].ID == ms[i-1].ID {
			return ErrIDExists
		}
	}
	if err := ClearMembers(b); err != nil {
		return err
	}
	if err := writeMembers(b, &Membership{Members: ms}); err != nil {
		return err
	}
	if len(ms) == 1 {
		return nil
	}
	cs := raftpb.ConfState{}
	for _, m := range ms {
		cs.Voters = append(cs.Voters, m.ID)
	}
	raw, err := cs.Marshal()
	if err != nil {
		return err
	}
	if err := b.SetMeta(metaRaftConfState, raw); err != nil {
		return err
	}
	return b.SetMeta(metaAppliedIndex, binary.BigEndian.AppendUint64(nil, uint64(len(ms))))
}
