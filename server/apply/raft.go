package apply

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/raftnode"
)

// metaRaftConfState is the raft ConfState stored with the applied index (a
// Loop's data directory has none: its member set stands for it).
const metaRaftConfState = "raft_conf_state"

// RaftMachine is the raftnode.StateMachine of a cluster member: it applies
// committed entries through the same Applier as the Loop, one mvcc batch
// per handed-over run of entries, with the applied index (the Loop's
// counter, continued) in that batch. The batch commits without an fsync:
// the node hands over only entries durable in its log, so a batch lost in
// a crash is applied again on restart, and the log's next synced write
// makes it durable (the log shares the Pebble database).
type RaftMachine struct {
	onBatch   func(time.Duration) // see ObserveCommits
	store     *mvcc.Store
	applier   *Applier
	onCommit  func([]mvcc.RevisionEvents)
	onApplied func(r *Request, res *Result)
	onRestore func() error
}

// RaftMachineOptions configure a RaftMachine.
type RaftMachineOptions struct {
	// OnCommit receives each batch's events before any caller is answered
	// (the watch hub), as LoopOptions.OnCommit.
	OnCommit func([]mvcc.RevisionEvents)
	// OnApplied sees every applied request and its result on every member,
	// on the apply goroutine, after the batch is committed: per-member
	// effects of replicated state (simple tokens). It must not block.
	OnApplied func(r *Request, res *Result)
	// OnRestore runs on the apply goroutine after a snapshot replaced the
	// store and the applier reloaded: the member rebuilds what it derives
	// from the store (leases, watchers). An error is fatal.
	OnRestore func() error
}

var _ raftnode.StateMachine = (*RaftMachine)(nil)

// NewRaftMachine returns the state machine over s and a.
func NewRaftMachine(s *mvcc.Store, a *Applier, opts RaftMachineOptions) *RaftMachine {
	return &RaftMachine{store: s, applier: a, onCommit: opts.OnCommit, onApplied: opts.OnApplied, onRestore: opts.OnRestore}
}

// ObserveCommits makes f see how long each apply batch's commit takes
// (etcd_disk_backend_commit_duration_seconds). Call it before the node
// starts.
func (m *RaftMachine) ObserveCommits(f func(time.Duration)) { m.onBatch = f }

// AppliedState implements raftnode.StateMachine. A data directory written
// by the single-node Loop has an applied index but no ConfState: its
// member set (one voter, plus any member added there) stands for it, so
// the node adopts it as a group at that index.
func (m *RaftMachine) AppliedState() (uint64, raftpb.ConfState, error) {
	var (
		applied uint64
		cs      raftpb.ConfState
	)
	raw, err := m.store.Meta(metaAppliedIndex)
	if err != nil {
		return 0, cs, err
	}
	if len(raw) == 8 {
		applied = binary.BigEndian.Uint64(raw)
	}
	raw, err = m.store.Meta(metaRaftConfState)
	if err != nil {
		return 0, cs, err
	}
	if raw != nil {
		if err := cs.Unmarshal(raw); err != nil {
			return 0, cs, fmt.Errorf("apply: decode raft conf state: %w", err)
		}
		return applied, cs, nil
	}
	if applied > 0 {
		for _, x := range m.applier.Members().Members {
			if x.IsLearner {
				cs.Learners = append(cs.Learners, x.ID)
			} else {
				cs.Voters = append(cs.Voters, x.ID)
			}
		}
	}
	return applied, cs, nil
}

// HasRaftState reports whether the store was last written by a Raft member
// (it holds a ConfState).
func HasRaftState(s *mvcc.Store) (bool, error) {
	raw, err := s.Meta(metaRaftConfState)
	return raw != nil, err
}

// Apply implements raftnode.StateMachine.
func (m *RaftMachine) Apply(ents []raftnode.Entry) ([]any, error) {
	b, err := m.store.NewBatch()
	if err != nil {
		return nil, err
	}
	out := make([]any, len(ents))
	// One allocation for the batch's requests (a Request is large) and
	// results: out holds pointers into it, where a Result boxed on its own
	// would cost an allocation per entry, most of them for entries no
	// proposer waits for on this member.
	slab := make([]appliedEntry, len(ents))
	for i, e := range ents {
		if e.Data == nil {
			continue // raft's empty entry of a new term
		}
		x := &slab[i]
		if err := x.req.Unmarshal(e.Data); err != nil {
			b.Abort()
			return nil, fmt.Errorf("apply: entry %d: %w", e.Index, err)
		}
		x.ok = true
		x.res = m.applier.Apply(b, &x.req)
		out[i] = &x.res
	}
	if err := b.SetMeta(metaAppliedIndex, binary.BigEndian.AppendUint64(nil, ents[len(ents)-1].Index)); err != nil {
		b.Abort()
		return nil, err
	}
	start := time.Now()
	if err := b.CommitUnsynced(); err != nil {
		return nil, err
	}
	if m.onBatch != nil {
		m.onBatch(time.Since(start))
	}
	if m.onCommit != nil {
		if ev := b.Events(); len(ev) > 0 {
			m.onCommit(ev)
		}
	}
	if m.onApplied != nil {
		for i := range slab {
			if x := &slab[i]; x.ok {
				res := x.res // NB: a copy: the proposer reads x.res
				m.onApplied(&x.req, &res)
			}
		}
	}
	return out, nil
}

// appliedEntry is one entry of an apply batch: its request and result
// (ok: it had a request).
type appliedEntry struct {
	req Request
	res Result
	ok  bool
}

// ApplyConfChange implements raftnode.StateMachine: the member set changes
// (or the change is refused, as the Loop refuses it) in the same batch as
// the ConfState and the applied index.
func (m *RaftMachine) ApplyConfChange(cc raftnode.ConfChange, confirm func() raftpb.ConfState) (any, error) {
	acc := &ConfChange{ID: cc.NodeID, PeerURLs: cc.PeerURLs}
	switch cc.Type {
	case raftnode.AddMember:
		acc.Type = ConfChangeAddMember
	case raftnode.AddLearner:
		acc.Type = ConfChangeAddLearner
	case raftnode.RemoveMember:
		acc.Type = ConfChangeRemoveMember
	case raftnode.UpdateMember:
		acc.Type = ConfChangeUpdateMember
	case raftnode.PromoteMember:
		acc.Type = ConfChangePromoteMember
	}
	b, err := m.store.NewBatch()
	if err != nil {
		return nil, err
	}
	res := m.applier.ApplyConfChange(b, acc)
	if res.Err == nil {
		cs := confirm()
		raw, err := cs.Marshal()
		if err == nil {
			err = b.SetMeta(metaRaftConfState, raw)
		}
		if err != nil {
			b.Abort()
			return nil, err
		}
	}
	if err := b.SetMeta(metaAppliedIndex, binary.BigEndian.AppendUint64(nil, cc.Index)); err != nil {
		b.Abort()
		return nil, err
	}
	if err := b.CommitUnsynced(); err != nil {
		return nil, err
	}
	return res, nil
}

// SetTenants replaces the tenants Apply counts, in a batch of its own
// between two apply batches (mvcc allows one batch at a time), as
// Loop.SetTenants. The counts are this member's own.
func (m *RaftMachine) SetTenants(ctx context.Context, tenants []Tenant) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := m.store.NewBatch()
	if err != nil {
		return err
	}
	if err := m.applier.SetTenants(m.store, b, tenants); err != nil {
		b.Abort()
		return err
	}
	return b.Commit()
}

// Raft errors, mapped by the server to etcd's rpctypes.
var (
	// ErrTimeout: a proposal was not applied within the request timeout.
	ErrTimeout = errors.New("apply: request timed out")
	// ErrTimeoutLeaderFail: … and the leader changed or was lost meanwhile.
	ErrTimeoutLeaderFail = errors.New("apply: request timed out, possibly due to previous leader failure")
)

// RaftProposer is the Proposer of a cluster member: a request is appended
// to the Raft log (forwarded to the leader by raft on a follower) and the
// caller waits until this member has applied it.
type RaftProposer struct {
	node    *raftnode.Node
	applier *Applier
	timeout time.Duration
}

var _ Proposer = (*RaftProposer)(nil)

// NewRaftProposer proposes through node; a proposal not applied within
// timeout (etcd's request timeout: 5s + 2 election timeouts) fails with
// ErrTimeout.
func NewRaftProposer(node *raftnode.Node, a *Applier, timeout time.Duration) *RaftProposer {
	return &RaftProposer{node: node, applier: a, timeout: timeout}
}

// Propose implements Proposer.
func (p *RaftProposer) Propose(ctx context.Context, r *Request) (Result, error) {
	data, err := r.Marshal()
	if err != nil {
		return Result{}, err
	}
	// The node enforces the request timeout itself: a context deadline
	// per write costs a timer (a tenth of the RPC's CPU on one member).
	leaderChanged := p.node.LeaderChangedNotify()
	v, err := p.node.ProposeTimeout(ctx, data, p.timeout)
	if err != nil {
		return Result{}, p.proposeError(ctx, ctx, leaderChanged, err)
	}
	return *v.(*Result), nil
}

// ProposeConfChange implements Proposer.
func (p *RaftProposer) ProposeConfChange(ctx context.Context, cc *ConfChange) (Result, error) {
	rc := raftnode.ConfChange{NodeID: cc.ID, PeerURLs: cc.PeerURLs}
	switch cc.Type {
	case ConfChangeAddMember:
		rc.Type = raftnode.AddMember
	case ConfChangeAddLearner:
		rc.Type = raftnode.AddLearner
	case ConfChangeRemoveMember:
		rc.Type = raftnode.RemoveMember
	case ConfChangeUpdateMember:
		rc.Type = raftnode.UpdateMember
	case ConfChangePromoteMember:
		rc.Type = raftnode.PromoteMember
	default:
		return Result{}, fmt.Errorf("apply: unknown membership change %d", cc.Type)
	}
	tctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	leaderChanged := p.node.LeaderChangedNotify()
	v, err := p.node.ProposeConfChange(tctx, rc)
	if errors.Is(err, raftnode.ErrRemoved) && cc.Type == ConfChangeRemoveMember && cc.ID == p.node.ID() {
		// This member removed itself, and the others told it so before
		// it applied the change (the leader stops replicating to a
		// removed member): the change is committed.
		cur := p.applier.Members()
		if cur.Member(cc.ID) != nil {
			return Result{Resp: cur.with(cc)}, nil
		}
		return Result{Resp: cur}, nil
	}
	if err != nil {
		return Result{}, p.proposeError(ctx, tctx, leaderChanged, err)
	}
	return v.(Result), nil
}

// proposeError turns the request timeout (not the caller's own deadline)
// into etcd's timeout errors.
func (p *RaftProposer) proposeError(ctx, tctx context.Context, leaderChanged <-chan struct{}, err error) error {
	if errors.Is(err, raftnode.ErrTimeout) || ctx.Err() == nil && tctx.Err() != nil && errors.Is(err, tctx.Err()) {
		select {
		case <-leaderChanged:
			return ErrTimeoutLeaderFail
		default:
		}
		if p.node.Leader() == 0 {
			return ErrTimeoutLeaderFail
		}
		return ErrTimeout
	}
	if errors.Is(err, raftnode.ErrStopped) || errors.Is(err, raftnode.ErrRemoved) {
		return ErrStopped
	}
	return err
}

// AppliedIndex implements Proposer.
func (p *RaftProposer) AppliedIndex() uint64 { return p.node.AppliedIndex() }

// StoredAppliedIndex returns the applied index stored in s (the Loop's or
// a Raft member's).
func StoredAppliedIndex(s *mvcc.Store) (uint64, error) {
	raw, err := s.Meta(metaAppliedIndex)
	if err != nil || len(raw) != 8 {
		return 0, err
	}
	return binary.BigEndian.Uint64(raw), nil
}
