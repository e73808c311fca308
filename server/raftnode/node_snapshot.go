package raftnode

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// The node's side of log truncation and snapshots.

// applyItem is what the ready loop hands the apply goroutine: committed
// entries, or a snapshot to install in their order.
type applyItem struct {
	ents []raftpb.Entry
	snap *snapshotJob
}

// snapshotJob is a snapshot from a Ready, installed by the apply goroutine
// while the ready loop waits.
type snapshotJob struct {
	snap raftpb.Snapshot
	hs   raftpb.HardState
	done chan error
}

// nodeStorage is the raft.Storage the node gives raft: the log, with the
// state machine's snapshot for a follower whose next entries are gone.
type nodeStorage struct {
	Log
	n *Node
}

// Snapshot implements raft.Storage. Raft calls it on the leader (holding
// the node's lock) when a follower needs entries the log no longer has.
// The metadata is the applied state now; the transport replaces it by the
// state of the data it actually sends (read from the same Pebble snapshot
// as the data, so never older), which raft accepts: a follower that
// reports a later index than the snapshot's is caught up from there.
func (s *nodeStorage) Snapshot() (raftpb.Snapshot, error) {
	n := s.n
	if n == nil || n.snaps == nil {
		return raftpb.Snapshot{}, raft.ErrSnapshotTemporarilyUnavailable
	}
	index := n.applied.Load()
	term, err := s.Log.Term(index)
	if err != nil || index == 0 {
		return raftpb.Snapshot{}, raft.ErrSnapshotTemporarilyUnavailable
	}
	return raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: index, Term: term, ConfState: n.ConfState()}}, nil
}

// maybeTruncate truncates the log below the durable applied index minus
// the catch-up tail, once the applied index is SnapshotCount past the last
// truncation. It runs on the ready loop after a synced write.
func (n *Node) maybeTruncate() error {
	count := n.cfg.SnapshotCount
	durable := min(n.durableApplied.Load(), n.applied.Load())
	if count == 0 || durable < n.truncatedAt+count {
		return nil
	}
	keep := min(n.cfg.SnapshotCatchUpEntries, count)
	if durable <= keep {
		n.truncatedAt = durable
		return nil
	}
	index := durable - keep
	if limit, ok := n.snapsSent.limit(n, index); ok {
		// A follower installing a snapshot needs the entries after it:
		// truncating them would send it another snapshot, and again
		// (etcd pauses its compaction while a snapshot is in flight).
		// Tried again at the next synced write.
		index = limit
	} else {
		n.truncatedAt = durable
	}
	first, err := n.log.FirstIndex()
	if err != nil {
		return err
	}
	if index < first {
		return nil
	}
	if err := n.log.Compact(index); err != nil && !errors.Is(err, raft.ErrCompacted) {
		return fmt.Errorf("raftnode: truncate log at %d: %w", index, err)
	}
	n.snapStats.truncations.Add(1)
	n.lg.Debug("truncated the raft log", "through", index, "applied", durable)
	return nil
}

// handleSnapshot installs a Ready's snapshot: after every entry handed to
// the apply goroutine before it, and before the Ready's entries (which
// follow it) are saved.
func (n *Node) handleSnapshot(rd *raft.Ready) error {
	if n.snaps == nil {
		return fmt.Errorf("%w (snapshot at index %d)", ErrSnapshotUnsupported, rd.Snapshot.Metadata.Index)
	}
	hs := rd.HardState
	if raft.IsEmptyHardState(hs) {
		var err error
		if hs, _, err = n.log.InitialState(); err != nil {
			return err
		}
	}
	job := &snapshotJob{snap: rd.Snapshot, hs: hs, done: make(chan error, 1)}
	n.applyc <- applyItem{snap: job}
	if err := <-job.done; err != nil {
		return err
	}
	n.commit.Store(max(hs.Commit, rd.Snapshot.Metadata.Index))
	n.term.Store(hs.Term)
	n.truncatedAt = rd.Snapshot.Metadata.Index
	n.durableApplied.Store(rd.Snapshot.Metadata.Index)
	return nil
}

// installSnapshot runs on the apply goroutine: the state machine replaces
// its state (the install ingests the data and resets the log), then the
// node takes the snapshot's configuration and members.
func (n *Node) installSnapshot(j *snapshotJob) error {
	meta := j.snap.Metadata
	if meta.Index <= n.applied.Load() {
		return fmt.Errorf("raftnode: snapshot at %d is not past the applied index %d", meta.Index, n.applied.Load())
	}
	start := time.Now()
	n.snapStats.installing.Store(true)
	defer n.snapStats.installing.Store(false)
	sm := n.sm.(SnapshotStateMachine) // checked by Config.validate
	restored, err := sm.InstallSnapshot(meta, func() error { return n.snaps.install(j.snap.Data, meta, j.hs) })
	if err != nil {
		return fmt.Errorf("raftnode: install snapshot at %d: %w", meta.Index, err)
	}
	n.confMu.Lock()
	n.conf = meta.ConfState
	for _, id := range restored.Removed {
		n.removed[id] = true
	}
	n.confMu.Unlock()
	if n.tr != nil {
		for _, p := range restored.Peers {
			if p.ID != n.id {
				n.tr.AddPeer(p.ID, p.PeerURLs)
			}
		}
		for _, id := range restored.Removed {
			n.tr.RemovePeer(id)
		}
	}
	n.setApplied(meta.Index)
	n.snapStats.installed.Add(1)
	n.snapStats.installNanos.Add(uint64(time.Since(start)))
	n.campaignWanted.Store(true)
	n.lg.Info("installed a snapshot", "index", meta.Index, "term", meta.Term, "took", time.Since(start))
	return nil
}

// openSnapshot is the transport's view of the data for m (a MsgSnap from
// raft), and m with the metadata of that data.
func (n *Node) openSnapshot(m raftpb.Message) (*snapshotView, raftpb.Message, error) {
	if n.snaps == nil {
		return nil, m, ErrSnapshotUnsupported
	}
	v, err := n.snaps.open(n.sm.(SnapshotStateMachine))
	if err != nil {
		return nil, m, err
	}
	m.Snapshot = &raftpb.Snapshot{Metadata: v.meta}
	// The hold starts with the transfer (a long one must not see the log
	// cut past it) and ends with it if it failed: a follower unreachable
	// for long must not keep the log from being truncated.
	sent := n.snapsSent.add(m.To, v.meta.Index)
	v.onFinish = func(delivered bool) {
		if !delivered {
			n.snapsSent.remove(m.To, sent)
		}
	}
	return v, m, nil
}

// sentSnapshots are the snapshots sent to followers that have not yet
// caught up past them: the log keeps the entries after them.
type sentSnapshots struct {
	mu      sync.Mutex
	pending map[uint64]sentSnapshot
}

type sentSnapshot struct {
	index uint64
	at    time.Time
}

// sentSnapshotHold is how long a sent snapshot holds the log back at most
// (a follower that died while installing it does not keep the log from
// being truncated for ever).
const sentSnapshotHold = 5 * time.Minute

func (s *sentSnapshots) add(to, index uint64) sentSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		s.pending = map[uint64]sentSnapshot{}
	}
	p := sentSnapshot{index: index, at: time.Now()}
	s.pending[to] = p
	return p
}

// remove drops the hold of a transfer that failed, unless another one
// replaced it.
func (s *sentSnapshots) remove(to uint64, p sentSnapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[to] == p {
		delete(s.pending, to)
	}
}

// limit returns how far the log may be truncated, below index, for the
// followers sent a snapshot: up to the snapshot until one has installed
// it, then up to what it has (the leader's progress). A follower that
// installed it and is past index no longer holds the log back and is
// forgotten.
func (s *sentSnapshots) limit(n *Node, index uint64) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		return 0, false
	}
	n.mu.Lock()
	st := n.rn.Status()
	n.mu.Unlock()
	var lim uint64
	found := false
	for id, p := range s.pending {
		pr, ok := st.Progress[id]
		if !ok || time.Since(p.at) > sentSnapshotHold || pr.Match >= max(p.index, index) {
			delete(s.pending, id) // gone, given up on, or installed and past index
			continue
		}
		has := max(p.index, pr.Match)
		if has >= index {
			continue // not in the way yet
		}
		if !found || has < lim {
			lim, found = has, true
		}
	}
	return lim, found
}

// stageSnapshot starts receiving the data of m (a MsgSnap from a peer).
func (n *Node) stageSnapshot(m raftpb.Message) (*snapshotStage, error) {
	if n.snaps == nil {
		return nil, ErrSnapshotUnsupported
	}
	if m.Snapshot == nil || m.Snapshot.Metadata.Index == 0 {
		return nil, errors.New("raftnode: snapshot message without metadata")
	}
	return n.snaps.stage(m.Snapshot.Metadata, n.applied.Load())
}

// snapshotPeer is what the transport needs from the Raft it delivers to
// for snapshots (a Node).
type snapshotPeer interface {
	openSnapshot(m raftpb.Message) (*snapshotView, raftpb.Message, error)
	stageSnapshot(m raftpb.Message) (*snapshotStage, error)
}

var _ snapshotPeer = (*Node)(nil)

type snapshotStats struct {
	truncations  atomic.Uint64
	installed    atomic.Uint64
	installNanos atomic.Uint64
	installing   atomic.Bool // etcd_server_snapshot_apply_in_progress_total
}
