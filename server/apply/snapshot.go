package apply

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/raftnode"
)

// A Raft member's side of snapshots: what a snapshot of the store stands
// for, and the state rebuilt after one is installed.

var _ raftnode.SnapshotStateMachine = (*RaftMachine)(nil)

// SnapshotState implements raftnode.SnapshotStateMachine: the applied index
// and ConfState stored in r, a Pebble snapshot of the store's database.
func (m *RaftMachine) SnapshotState(r pebble.Reader) (uint64, raftpb.ConfState, error) {
	var cs raftpb.ConfState
	get := func(name string) ([]byte, error) {
		v, closer, err := r.Get(mvcc.MetaKey(name))
		if errors.Is(err, pebble.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		defer closer.Close()
		return append([]byte(nil), v...), nil
	}
	raw, err := get(metaAppliedIndex)
	if err != nil {
		return 0, cs, err
	}
	if len(raw) != 8 {
		return 0, cs, fmt.Errorf("apply: snapshot has no applied index")
	}
	applied := binary.BigEndian.Uint64(raw)
	if raw, err = get(metaRaftConfState); err != nil {
		return 0, cs, err
	}
	if raw == nil {
		return 0, cs, fmt.Errorf("apply: snapshot at %d has no raft configuration", applied)
	}
	if err := cs.Unmarshal(raw); err != nil {
		return 0, cs, fmt.Errorf("apply: decode raft conf state: %w", err)
	}
	return applied, cs, nil
}

// InstallSnapshot implements raftnode.SnapshotStateMachine: the store's
// contents are replaced with writes held (mvcc.Store.Replace), then the
// applier reloads what it keeps in memory (members, versions, alarms,
// tenants' counters, auth), and OnRestore rebuilds the member's own
// derived state (leases, the watch hub).
func (m *RaftMachine) InstallSnapshot(meta raftpb.SnapshotMetadata, install func() error) (raftnode.Restored, error) {
	if err := m.store.Replace(install); err != nil {
		return raftnode.Restored{}, err
	}
	applied, err := StoredAppliedIndex(m.store)
	if err != nil {
		return raftnode.Restored{}, err
	}
	if applied != meta.Index {
		return raftnode.Restored{}, fmt.Errorf("apply: snapshot at %d holds state applied to %d", meta.Index, applied)
	}
	if err := m.applier.Reload(m.store); err != nil {
		return raftnode.Restored{}, err
	}
	if m.onRestore != nil {
		if err := m.onRestore(); err != nil {
			return raftnode.Restored{}, err
		}
	}
	var r raftnode.Restored
	ms := m.applier.Members()
	for _, x := range ms.Members {
		r.Peers = append(r.Peers, raftnode.Peer{ID: x.ID, PeerURLs: x.PeerURLs})
	}
	r.Removed = ms.Removed
	return r, nil
}

// Reload reloads the applier's state from the store after its contents
// were replaced (a Raft snapshot): members, versions, alarms, tenants'
// counters and the auth store. Called between two apply batches.
func (a *Applier) Reload(s *mvcc.Store) error {
	members, err := loadMembers(s, nil)
	if err != nil {
		return err
	}
	versions, err := loadVersions(s, a.initialVersion)
	if err != nil {
		return err
	}
	alarms, err := loadAlarms(s)
	if err != nil {
		return err
	}
	if u := a.tenants.Load(); u != nil {
		var ts []Tenant
		for _, c := range u.list {
			ts = append(ts, c.Tenant)
		}
		nu, err := loadTenants(s, ts)
		if err != nil {
			return err
		}
		a.tenants.Store(nu)
	}
	if a.auth != nil {
		if err := a.auth.Reload(AuthReader(s)); err != nil {
			return err
		}
	}
	a.members.Store(members)
	a.versions.Store(versions)
	a.alarms.Store(&alarms)
	return nil
}
