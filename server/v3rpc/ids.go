package v3rpc

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/metastore-dev/metastore/mvcc"
)

const (
	metaClusterID = "cluster_id"
	metaMemberID  = "member_id"
	metaTerm      = "raft_term"
)

// BootstrapIDs reads the cluster and member ids, creating them on first
// start.
func BootstrapIDs(s *mvcc.Store) (IDs, error) {
	ids, err := bootstrapIDs(s)
	return IDs{Cluster: ids.cluster, Member: ids.member, Term: ids.term}, err
}

// bootstrapIDs reads the cluster and member ids, creating them on first start.
func bootstrapIDs(s *mvcc.Store) (memberIDs, error) {
	var ids memberIDs
	get := func(name string) (uint64, error) {
		v, err := s.Meta(name)
		if err != nil || v == nil {
			return 0, err
		}
		if len(v) != 8 {
			return 0, fmt.Errorf("meta %s: bad length %d", name, len(v))
		}
		return binary.BigEndian.Uint64(v), nil
	}
	var err error
	if ids.cluster, err = get(metaClusterID); err != nil {
		return ids, err
	}
	if ids.member, err = get(metaMemberID); err != nil {
		return ids, err
	}
	if ids.term, err = get(metaTerm); err != nil {
		return ids, err
	}
	if ids.cluster != 0 && ids.member != 0 && ids.term != 0 {
		return ids, nil
	}
	ids = newMemberIDs()
	return ids, writeIDs(s, ids)
}

// newMemberIDs returns the ids of a new one-member cluster.
func newMemberIDs() memberIDs {
	return memberIDs{cluster: randomID(), member: randomID(), term: 2}
}

// writeIDs stores ids durably.
func writeIDs(s *mvcc.Store, ids memberIDs) error {
	b, err := s.NewBatch()
	if err != nil {
		return err
	}
	for name, v := range map[string]uint64{metaClusterID: ids.cluster, metaMemberID: ids.member, metaTerm: ids.term} {
		if err := b.SetMeta(name, binary.BigEndian.AppendUint64(nil, v)); err != nil {
			b.Abort()
			return err
		}
	}
	return b.Commit()
}

func randomID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on supported platforms
		}
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

// StoredIDs returns the ids stored in s, and whether there are any (a new
// data directory has none).
func StoredIDs(s *mvcc.Store) (IDs, bool, error) {
	v, err := s.Meta(metaMemberID)
	if err != nil || v == nil {
		return IDs{}, false, err
	}
	ids, err := bootstrapIDs(s)
	return IDs{Cluster: ids.cluster, Member: ids.member, Term: ids.term}, true, err
}

// SaveIDs stores a cluster member's ids, derived as etcd derives them
// (server/raftnode) rather than drawn at random.
func SaveIDs(s *mvcc.Store, ids IDs) error {
	if ids.Term == 0 {
		ids.Term = 1
	}
	return writeIDs(s, memberIDs{cluster: ids.Cluster, member: ids.Member, term: ids.Term})
}

// LocalMetaNames are the metadata values that belong to this member, not
// to the replicated state: a Raft snapshot neither carries nor replaces
// them.
func LocalMetaNames() []string { return []string{metaClusterID, metaMemberID, metaTerm} }
