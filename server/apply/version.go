package apply

import (
	"fmt"

	"go.etcd.io/etcd/api/v3/membershippb"

	"github.com/metastore-dev/metastore/mvcc"
)

// Versions is the cluster version and the downgrade in progress, as etcd
// keeps them in its membership state. Immutable once published.
type Versions struct {
	// Cluster is the cluster version, "major.minor.0" (etcd's semver form).
	// The storage version follows it, as etcd's storage-version monitor
	// migrates right after every cluster version change.
	Cluster string
	// DowngradeEnabled and DowngradeTarget ("major.minor.0") describe a
	// downgrade in progress.
	DowngradeEnabled bool
	DowngradeTarget  string
}

const (
	metaClusterVersion = "cluster_version"
	metaDowngrade      = "downgrade"
)

// Versions returns the cluster version and downgrade state.
func (a *Applier) Versions() *Versions { return a.versions.Load() }

// loadVersions reads the version state; initial is the cluster version of a
// store that has none yet.
func loadVersions(s *mvcc.Store, initial string) (*Versions, error) {
	v := &Versions{Cluster: initial}
	raw, err := s.Meta(metaClusterVersion)
	if err != nil {
		return nil, err
	}
	if raw != nil {
		v.Cluster = string(raw)
	}
	raw, err = s.Meta(metaDowngrade)
	if err != nil {
		return nil, err
	}
	if raw != nil {
		var d membershippb.DowngradeInfoSetRequest
		if err := d.Unmarshal(raw); err != nil {
			return nil, fmt.Errorf("apply: decode downgrade: %w", err)
		}
		v.DowngradeEnabled, v.DowngradeTarget = d.Enabled, d.Ver
	}
	return v, nil
}

// clusterVersionSet applies etcd's ClusterVersionSet: the version monitor
// proposes it when the cluster version must follow a downgrade or return to
// the server's version.
func (a *Applier) clusterVersionSet(b *mvcc.Batch, r *membershippb.ClusterVersionSetRequest) Result {
	next := *a.versions.Load()
	next.Cluster = r.Ver
	if err := b.SetMeta(metaClusterVersion, []byte(r.Ver)); err != nil {
		return Result{Err: err}
	}
	a.versions.Store(&next)
	return Result{Resp: &next}
}

// downgradeInfoSet applies etcd's DowngradeInfoSet: enable (with a target
// version) or cancel a downgrade.
func (a *Applier) downgradeInfoSet(b *mvcc.Batch, r *membershippb.DowngradeInfoSetRequest) Result {
	next := *a.versions.Load()
	next.DowngradeEnabled, next.DowngradeTarget = r.Enabled, r.Ver
	raw, err := r.Marshal()
	if err != nil {
		return Result{Err: err}
	}
	if err := b.SetMeta(metaDowngrade, raw); err != nil {
		return Result{Err: err}
	}
	a.versions.Store(&next)
	return Result{Resp: &next}
}
