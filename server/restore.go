package server

import (
	"fmt"
	"slices"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/raftnode"
	"github.com/metastore-dev/metastore/server/v3rpc"
)

// RestoreCluster is the new cluster a snapshot is restored into, with
// etcdutl's restore flags (and their defaults): one restore per member,
// each with the same InitialCluster and Token and its own Name.
type RestoreCluster struct {
	// Name is this member's name in InitialCluster (--name).
	Name string
	// InitialCluster is "name=peer-url,..." of every member of the new
	// cluster (--initial-cluster).
	InitialCluster string
	// Token is --initial-cluster-token: it goes into the member IDs.
	Token string
	// AdvertisePeerURLs are this member's peer URLs
	// (--initial-advertise-peer-urls): they must be InitialCluster's for
	// Name, as etcd checks.
	AdvertisePeerURLs []string
}

// Etcdutl's defaults for the restore flags.
const (
	defaultRestoreName    = "default"
	defaultRestorePeerURL = "http://localhost:2380"
	defaultRestoreToken   = "etcd-cluster"
)

// members checks rc as etcdutl does and returns the new cluster's members
// with the IDs etcd derives (from peer URLs and token), this member's ID
// and the cluster's.
func (rc RestoreCluster) members() (ms []*pb.Member, self, cluster uint64, err error) {
	if rc.Name == "" {
		rc.Name = defaultRestoreName
	}
	if rc.InitialCluster == "" {
		rc.InitialCluster = defaultRestoreName + "=" + defaultRestorePeerURL
	}
	if rc.Token == "" {
		rc.Token = defaultRestoreToken
	}
	if len(rc.AdvertisePeerURLs) == 0 {
		rc.AdvertisePeerURLs = []string{defaultRestorePeerURL}
	}
	cfg := &config.Config{Name: rc.Name}
	cfg.Cluster.InitialCluster = rc.InitialCluster
	initial, err := cfg.InitialMembers()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("--initial-cluster: %w", err)
	}
	var ids []uint64
	for _, m := range initial {
		id, err := raftnode.MemberID(m.PeerURLs, rc.Token, nil)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("--initial-cluster: %w", err)
		}
		ids = append(ids, id)
		ms = append(ms, &pb.Member{ID: id, Name: m.Name, PeerURLs: m.PeerURLs})
		if m.Name != rc.Name {
			continue
		}
		self = id
		if err := advertiseMatches(rc.Name, m.PeerURLs, rc.AdvertisePeerURLs); err != nil {
			return nil, 0, 0, err
		}
	}
	if self == 0 {
		return nil, 0, 0, fmt.Errorf("couldn't find local name %q in the initial cluster configuration", rc.Name)
	}
	return ms, self, raftnode.ClusterID(ids), nil
}

// RestoreSnapshotCluster restores a snapshot as RestoreSnapshot does, into
// one member of a new cluster (etcdutl's snapshot restore with its
// cluster flags): the member and cluster IDs are the ones etcd derives
// from rc, the member set is rc's (the snapshot's members, removed
// members, alarms and Raft state are dropped), and the data, leases and
// auth are the snapshot's. Restoring the same file into every member of
// rc, each with its own Name, gives members that start together as a
// cluster (their --initial-cluster-state does not matter any more, as
// for etcd) and serve the snapshot's revisions.
func RestoreSnapshotCluster(file, dataDir string, opts RestoreOptions, rc RestoreCluster) (rev int64, err error) {
	ms, self, cluster, err := rc.members()
	if err != nil {
		return 0, err
	}
	opts.Finish = func(store *mvcc.Store) error {
		if err := v3rpc.SaveIDs(store, v3rpc.IDs{Cluster: cluster, Member: self, Term: 1}); err != nil {
			return err
		}
		b, err := store.NewBatch()
		if err != nil {
			return err
		}
		if err := apply.SetRestoredMembers(b, ms); err != nil {
			b.Abort()
			return err
		}
		return b.Commit()
	}
	return v3rpc.RestoreSnapshot(file, dataDir, opts)
}

// advertiseMatches is etcd's advertiseMatchesCluster check, with its
// messages: the member's URLs in --initial-cluster and its
// --initial-advertise-peer-urls must be the same set.
func advertiseMatches(name string, initial, advertised []string) error {
	var missing []string
	for _, u := range initial {
		if !slices.Contains(advertised, u) {
			missing = append(missing, name+"="+u)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("--initial-cluster has %s but missing from --initial-advertise-peer-urls=%s", strings.Join(missing, ","), strings.Join(advertised, ","))
	}
	for _, u := range advertised {
		if !slices.Contains(initial, u) {
			missing = append(missing, u)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("--initial-advertise-peer-urls has %s but missing from --initial-cluster=%s=%s", strings.Join(missing, ","), name, strings.Join(advertised, ","))
	}
	return nil
}
