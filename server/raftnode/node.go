package raftnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Errors of the node. The server maps them to etcd's rpctypes at its edge
// (ErrGRPCStopped, ErrGRPCNoLeader, ErrGRPCLeaderChanged, ErrGRPCTimeout,
// ErrGRPCNotLeader, ErrGRPCLearnerNotReady, ErrGRPCBadLeaderTransferee).
var (
	ErrStopped         = errors.New("raftnode: node stopped")
	ErrRemoved         = errors.New("raftnode: member removed from the cluster")
	ErrNoLeader        = errors.New("raftnode: no leader")
	ErrLeaderChanged   = errors.New("raftnode: leader changed")
	ErrTimeout         = errors.New("raftnode: request timed out")
	ErrNotLeader       = errors.New("raftnode: not the leader")
	ErrLearnerNotReady = errors.New("raftnode: learner is not in sync with the leader")
	ErrBadTransferee   = errors.New("raftnode: bad leader transferee")
	// ErrSnapshotUnsupported stops a node without a SnapshotStore that
	// receives a snapshot.
	ErrSnapshotUnsupported = errors.New("raftnode: snapshot received but this node has no snapshot store")
)

// Log is the node's durable log: a raft.Storage it also writes. LogStore
// implements it; tests wrap it to observe the order of writes.
type Log interface {
	raft.Storage
	// Save persists one Ready's HardState and entries in one write,
	// synced when sync is set; it returns when they are durable.
	Save(hs raftpb.HardState, ents []raftpb.Entry, sync bool) error
	// SetConfState sets the ConfState InitialState reports.
	SetConfState(cs raftpb.ConfState)
	// ResetTo starts an empty log at (index, term).
	ResetTo(index, term uint64) error
	// Compact removes the entries up to and including index.
	Compact(index uint64) error
}

var _ Log = (*LogStore)(nil)

// Transport carries raft messages to the other members. Send must not block
// (a full queue drops and reports the peer unreachable); the node calls the
// peer methods from its apply goroutine when membership changes.
type Transport interface {
	Send(msgs []raftpb.Message)
	AddPeer(id uint64, peerURLs []string)
	UpdatePeer(id uint64, peerURLs []string)
	RemovePeer(id uint64)
}

// Peer is a member as the node first knows it.
type Peer struct {
	ID       uint64
	PeerURLs []string
}

// Config configures a Node.
type Config struct {
	// ID is this member's ID (MemberID); not 0.
	ID uint64
	// Log is the durable log (a LogStore).
	Log Log
	// StateMachine applies the committed entries.
	StateMachine StateMachine
	// Transport reaches the other members; nil for a group that only ever
	// has this member.
	Transport Transport
	// Peers are the members to reach at start (this one may be listed):
	// the initial cluster, or the members stored by the state machine.
	Peers []Peer
	// Removed are the IDs of members removed from the cluster (stored by
	// the state machine): the transport refuses them, so a removed member
	// that comes back learns it and stops.
	Removed []uint64
	// NewCluster bootstraps a new cluster of Peers when the log and the
	// state machine are both empty (etcd's --initial-cluster-state new).
	// Without it an empty member waits for the leader to send it the log
	// (state existing).
	NewCluster bool

	// TickInterval is raft's tick (etcd's --heartbeat-interval). 100ms.
	TickInterval time.Duration
	// ElectionTicks and HeartbeatTicks are in ticks: etcd's
	// --election-timeout / --heartbeat-interval (10 and 1).
	ElectionTicks, HeartbeatTicks int
	// MaxSizePerMsg bounds an append message's entries (1 MiB).
	MaxSizePerMsg uint64
	// MaxInflightMsgs bounds appends in flight per follower (512).
	MaxInflightMsgs int
	// ReadIndexRetry is how often an unanswered ReadIndex is sent again
	// (500ms); ReadIndexTimeout ends the round (5s + 2 election timeouts).
	ReadIndexRetry, ReadIndexTimeout time.Duration
	// Logger receives the node's and raft's logs.
	Logger *slog.Logger
	// OnSave, if set, is called on the ready loop after each Ready's write
	// with its duration and whether it was synced (etcd's
	// etcd_disk_wal_fsync_duration_seconds). It must not block.
	OnSave func(d time.Duration, synced bool)

	// SnapshotCount truncates the log once the applied index (durable in
	// the store) is this many entries past the last truncation (etcd's
	// --snapshot-count); 0 never truncates.
	SnapshotCount uint64
	// SnapshotCatchUpEntries are kept below the applied index at a
	// truncation, for followers a little behind (etcd's
	// --snapshot-catchup-entries, 5000); at most SnapshotCount are kept.
	SnapshotCatchUpEntries uint64
	// Snapshots sends and installs snapshots of the state machine (which
	// must then be a SnapshotStateMachine); nil: a follower whose entries
	// were truncated cannot catch up, and receiving a snapshot stops the
	// node with ErrSnapshotUnsupported.
	Snapshots *SnapshotStore

	// stallWarning is how long the ready loop or the apply goroutine may
	// stay in one stage before the watchdog warns (5s; tests shorten it).
	stallWarning time.Duration

	// testHooks observe the ready loop (tests only).
	testHooks *testHooks
}

type testHooks struct {
	// readyStart runs when a Ready is taken up, with the member's role.
	readyStart func(leader bool)
	// beforeAdvance runs after a Ready is handled, before raft is told.
	beforeAdvance func()
}

func (c *Config) setDefaults() {
	if c.TickInterval <= 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.ElectionTicks <= 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks <= 0 {
		c.HeartbeatTicks = 1
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = 1 << 20
	}
	if c.MaxInflightMsgs <= 0 {
		c.MaxInflightMsgs = 512
	}
	if c.ReadIndexRetry <= 0 {
		c.ReadIndexRetry = 500 * time.Millisecond
	}
	if c.SnapshotCatchUpEntries == 0 {
		c.SnapshotCatchUpEntries = 5000
	}
	if c.ReadIndexTimeout <= 0 {
		c.ReadIndexTimeout = 5*time.Second + 2*time.Duration(c.ElectionTicks)*c.TickInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.stallWarning <= 0 {
		c.stallWarning = 5 * time.Second
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.ID == 0 {
		errs = append(errs, errors.New("raftnode: member ID is 0"))
	}
	if c.Log == nil {
		errs = append(errs, errors.New("raftnode: no log"))
	}
	if c.StateMachine == nil {
		errs = append(errs, errors.New("raftnode: no state machine"))
	}
	if c.HeartbeatTicks >= c.ElectionTicks {
		errs = append(errs, fmt.Errorf("raftnode: election ticks (%d) must exceed heartbeat ticks (%d)", c.ElectionTicks, c.HeartbeatTicks))
	}
	for _, p := range c.Peers {
		if p.ID == 0 {
			errs = append(errs, errors.New("raftnode: peer with ID 0"))
		}
	}
	if _, ok := c.StateMachine.(SnapshotStateMachine); c.Snapshots != nil && !ok {
		errs = append(errs, errors.New("raftnode: snapshots need a SnapshotStateMachine"))
	}
	if c.NewCluster && !slices.ContainsFunc(c.Peers, func(p Peer) bool { return p.ID == c.ID }) {
		errs = append(errs, fmt.Errorf("raftnode: new cluster's peers do not include this member %s", FormatID(c.ID)))
	}
	return errors.Join(errs...)
}

// Node is one member of a Raft group: it owns the raft state machine, the
// ready loop that persists, sends and hands committed entries to the
// StateMachine, and the linearizable-read loop.
//
// Goroutines: run (ticks and Readies), applyLoop (the StateMachine),
// readLoop (ReadIndex rounds) and watchdog (request timeouts, stalls:
// watchdog.go); Stop ends all four and waits.
type Node struct {
	id  uint64
	cfg Config
	lg  *slog.Logger
	log Log
	sm  StateMachine
	tr  Transport
	// snaps is cfg.Snapshots; nil without snapshots.
	snaps *SnapshotStore

	// mu guards rn and stopped: every call into raft holds it briefly, so
	// proposals and incoming messages reach raft without a channel hop,
	// while the ready loop persists and sends without it.
	mu      sync.Mutex
	rn      *raft.RawNode
	stopped bool

	readyc chan struct{} // cap 1: raft may have a Ready
	// campaignWanted asks the ready loop to check for a lone voter.
	campaignWanted atomic.Bool
	applyc         chan applyItem

	// Log truncation (the ready loop's): durableApplied is the applied
	// index as of the start of the last synced log write, which made
	// every apply batch before it durable; truncatedAt the applied index
	// at the last truncation.
	durableApplied atomic.Uint64
	truncatedAt    uint64
	snapStats      snapshotStats
	snapsSent      sentSnapshots

	ids   *requestIDs
	wait  waitRegistry
	props proposalQueue

	leader atomic.Uint64
	state  atomic.Int32 // raft.StateType
	// counters for Metrics
	leaderChanges   atomic.Uint64
	proposalsFailed atomic.Uint64
	term            atomic.Uint64
	commit          atomic.Uint64
	applied         atomic.Uint64

	notifyMu      sync.Mutex
	leaderChanged chan struct{} // closed and replaced when the leader changes
	appliedc      chan struct{} // closed and replaced when applied advances

	confMu  sync.Mutex
	conf    raftpb.ConfState
	removed map[uint64]bool

	readMu     sync.Mutex
	readNext   *readRound
	readClosed bool          // readMu: the read loop ended; no more rounds
	readc      chan struct{} // cap 1: a reader waits for a round
	readStatec chan raft.ReadState
	readRounds atomic.Uint64 // ReadIndex rounds run (each serves many readers)
	// remoteReads counts followers' ReadIndex requests this member served
	// from its own rounds as their leader.
	remoteReads atomic.Uint64
	// readFailed counts rounds that failed, readSlow answers to abandoned
	// rounds and resent requests (etcd's read-index counters).
	readFailed, readSlow atomic.Uint64
	heartbeats           *heartbeatWatch // heartbeat.go
	probes               readProbes      // readprobe.go
	// confGen counts configuration changes applied to raft (mu).
	confGen uint64

	// The stages the ready loop and the apply goroutine post, each on a
	// cache line of its own (they run on different cores), and the
	// watchdog's view of them (watchdog.go).
	_                      [64]byte
	readyProbe             loopProbe
	_                      [64]byte
	applyProbe             loopProbe
	_                      [64]byte
	readyWatch, applyWatch loopWatch

	stopOnce sync.Once
	stopc    chan struct{}
	donec    chan struct{}
	errMu    sync.Mutex
	err      error         // why the node stopped by itself
	failedc  chan struct{} // closed when err is set
}

// Start opens the node over cfg.Log and cfg.StateMachine: a new cluster is
// bootstrapped, a restart resumes from the log and the state machine's
// applied index, and a state machine that has state but no log (a
// single-node data directory) becomes a one-member group at its applied
// index.
func Start(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	applied, cs, err := cfg.StateMachine.AppliedState()
	if err != nil {
		return nil, err
	}
	last, err := cfg.Log.LastIndex()
	if err != nil {
		return nil, err
	}
	first, err := cfg.Log.FirstIndex()
	if err != nil {
		return nil, err
	}
	emptyLog := last == 0 && first == 1
	if emptyLog && applied > 0 {
		if len(cs.Voters) == 0 {
			return nil, fmt.Errorf("raftnode: state applied to %d but no configuration stored with it", applied)
		}
		if err := cfg.Log.ResetTo(applied, 1); err != nil {
			return nil, err
		}
	}
	cfg.Log.SetConfState(cs)
	hs, _, err := cfg.Log.InitialState()
	if err != nil {
		return nil, err
	}
	if applied > hs.Commit {
		// Applied entries were committed, but the HardState saying so was
		// lost: durable entries are applied while the Ready recording
		// their commit is being saved, and commit-only HardStates are not
		// synced. Raft requires applied ≤ commit.
		last, err := cfg.Log.LastIndex()
		if err != nil {
			return nil, err
		}
		if applied > last {
			return nil, fmt.Errorf("raftnode: state applied to %d beyond the end of the log at %d (log lost?)", applied, last)
		}
		hs.Commit = applied
		if err := cfg.Log.Save(hs, nil, true); err != nil {
			return nil, err
		}
	}
	lg := cfg.Logger.With("member", FormatID(cfg.ID))
	storage := &nodeStorage{Log: cfg.Log}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   storage,
		Applied:                   applied,
		MaxSizePerMsg:             cfg.MaxSizePerMsg,
		MaxInflightMsgs:           cfg.MaxInflightMsgs,
		MaxUncommittedEntriesSize: 1 << 30,
		CheckQuorum:               true,
		PreVote:                   true,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger{lg: lg.With("component", "raft")},
	})
	if err != nil {
		return nil, err
	}
	if emptyLog && applied == 0 && cfg.NewCluster {
		peers := slices.Clone(cfg.Peers)
		slices.SortFunc(peers, func(a, b Peer) int { return cmpUint64(a.ID, b.ID) })
		rps := make([]raft.Peer, len(peers))
		for i, p := range peers {
			ctx, err := json.Marshal(confContext{Type: AddMember, PeerURLs: p.PeerURLs})
			if err != nil {
				return nil, err
			}
			rps[i] = raft.Peer{ID: p.ID, Context: ctx}
		}
		if err := rn.Bootstrap(rps); err != nil {
			return nil, err
		}
		cs = raftpb.ConfState{}
		for _, p := range peers {
			cs.Voters = append(cs.Voters, p.ID)
		}
	}
	n := &Node{
		id:            cfg.ID,
		cfg:           cfg,
		lg:            lg,
		log:           cfg.Log,
		sm:            cfg.StateMachine,
		tr:            cfg.Transport,
		snaps:         cfg.Snapshots,
		rn:            rn,
		readyc:        make(chan struct{}, 1),
		applyc:        make(chan applyItem, 16),
		truncatedAt:   applied,
		ids:           newRequestIDs(cfg.ID, time.Now()),
		leaderChanged: make(chan struct{}),
		appliedc:      make(chan struct{}),
		conf:          cs,
		removed:       map[uint64]bool{},
		readNext:      newReadRound(),
		heartbeats:    newHeartbeatWatch(time.Duration(cfg.HeartbeatTicks) * cfg.TickInterval),
		readc:         make(chan struct{}, 1),
		readStatec:    make(chan raft.ReadState, 16),
		probes:        readProbes{donec: make(chan struct{}, 1)},
		stopc:         make(chan struct{}),
		donec:         make(chan struct{}),
		failedc:       make(chan struct{}),
	}
	for _, id := range cfg.Removed {
		n.removed[id] = true
	}
	storage.n = n
	n.applied.Store(applied)
	n.durableApplied.Store(applied)
	n.term.Store(hs.Term)
	n.commit.Store(hs.Commit)
	if n.tr != nil {
		for _, p := range cfg.Peers {
			if p.ID != n.id {
				n.tr.AddPeer(p.ID, p.PeerURLs)
			}
		}
	}
	n.campaignWanted.Store(true)
	n.readyWatch = loopWatch{name: "raft ready loop", probe: &n.readyProbe}
	n.applyWatch = loopWatch{name: "raft apply goroutine", probe: &n.applyProbe}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); n.run() }()
	go func() { defer wg.Done(); n.applyLoop() }()
	go func() { defer wg.Done(); n.readLoop() }()
	loopsDone, watchdogDone := make(chan struct{}), make(chan struct{})
	// The watchdog outlives the other loops: Stop persists and applies
	// what raft handed out, and a stall there is worth a warning too.
	go func() { defer close(watchdogDone); n.watchdog(loopsDone) }()
	go func() {
		wg.Wait()
		close(loopsDone)
		<-watchdogDone
		n.wait.closeAll(n.stopError())
		close(n.donec)
	}()
	n.signal()
	return n, nil
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// campaignIfAlone starts an election at once when this member is the only
// voter: a one-member group then leads right after start instead of after
// an election timeout. Raft refuses while configuration changes wait to be
// applied (a fresh bootstrap), so it runs on the ready loop, after Advance
// has told raft about the apply, whenever campaignWanted is set (at start
// and after each configuration change).
func (n *Node) campaignIfAlone() {
	cs := n.ConfState()
	if len(cs.Voters) != 1 || cs.Voters[0] != n.id || len(cs.VotersOutgoing) != 0 {
		return
	}
	n.readyProbe.enter(stageCampaign)
	n.mu.Lock()
	if !n.stopped && n.rn.BasicStatus().RaftState != raft.StateLeader {
		_ = n.rn.Campaign()
	}
	n.mu.Unlock()
}

// waitAppliedLocal waits until the apply goroutine has applied index.
// Unlike waitApplied it goes on waiting through Stop (which persists and
// applies what raft has handed out) and ends early only when the node
// failed (the apply goroutine then drains without applying).
func (n *Node) waitAppliedLocal(index uint64) error {
	stopc := n.stopc
	for {
		n.notifyMu.Lock()
		ch := n.appliedc
		n.notifyMu.Unlock()
		if n.applied.Load() >= index {
			return nil
		}
		if err := n.Err(); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-stopc:
			stopc = nil // stopping: the apply goroutine still runs
		case <-n.failedc:
		}
	}
}

// alone reports whether this member is the group's only voter.
func (n *Node) alone() bool {
	n.confMu.Lock()
	defer n.confMu.Unlock()
	return len(n.conf.Voters) == 1 && n.conf.Voters[0] == n.id && len(n.conf.VotersOutgoing) == 0
}

// ID returns this member's ID.
func (n *Node) ID() uint64 { return n.id }

// Stop refuses new requests, persists and applies what raft has already
// handed out, answers every waiting caller (ErrStopped for those whose
// entries were not applied) and waits for the node's goroutines to end. It
// returns the error that stopped the node by itself, if any (not
// ErrRemoved: a removal is an orderly end; Err reports it).
func (n *Node) Stop() error {
	n.triggerStop()
	<-n.donec
	n.errMu.Lock()
	defer n.errMu.Unlock()
	if errors.Is(n.err, ErrRemoved) {
		return nil
	}
	return n.err
}

// Done is closed once the node has stopped (by Stop, a fatal error, or its
// removal from the cluster); Err then says why.
func (n *Node) Done() <-chan struct{} { return n.donec }

// Err returns the error that stopped the node by itself (ErrRemoved when it
// was removed from the cluster), or nil.
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

func (n *Node) stopError() error {
	if err := n.Err(); err != nil {
		return err
	}
	return ErrStopped
}

func (n *Node) triggerStop() {
	n.stopOnce.Do(func() {
		n.mu.Lock()
		n.stopped = true
		n.mu.Unlock()
		close(n.stopc)
	})
}

// fail stops the node because of err (the first error wins).
func (n *Node) fail(err error) {
	n.errMu.Lock()
	if n.err == nil {
		n.err = err
		close(n.failedc)
		if !errors.Is(err, ErrRemoved) {
			n.lg.Error("raft node stopping", "err", err)
		}
	}
	n.errMu.Unlock()
	n.triggerStop()
}

func (n *Node) signal() {
	select {
	case n.readyc <- struct{}{}:
	default:
	}
}

// run is the ready loop: ticks, and every Ready handled in raft's order.
func (n *Node) run() {
	defer close(n.applyc)
	tick := time.NewTicker(n.cfg.TickInterval)
	defer tick.Stop()
	for {
		n.readyProbe.enter(stageIdle)
		select {
		case <-tick.C:
			n.tick()
		case <-n.readyc:
			if n.campaignWanted.Swap(false) {
				n.campaignIfAlone()
			}
		case <-n.stopc:
			// Nothing new is stepped now; persist and apply what raft has.
			if n.Err() == nil {
				if err := n.processReadies(nil); err != nil {
					n.fail(err)
				}
			}
			return
		}
		if err := n.processReadies(tick.C); err != nil {
			n.fail(err)
			return
		}
	}
}

// tick is raft's tick. Proposals past their deadline are answered by the
// watchdog, not here: a ready loop that blocks must not take the request
// timeout with it.
func (n *Node) tick() {
	n.readyProbe.enter(stageTick)
	n.mu.Lock()
	n.rn.Tick()
	n.mu.Unlock()
}

// processReadies handles Readies until raft has none. It keeps ticking
// meanwhile: under a steady stream of proposals there is always another
// Ready, and a leader that stopped ticking would stop its heartbeats.
func (n *Node) processReadies(tickc <-chan time.Time) error {
	for {
		select {
		case <-tickc:
			n.tick()
		default:
		}
		n.stepProposals()
		n.readyProbe.enter(stageTakeReady)
		n.mu.Lock()
		if !n.rn.HasReady() {
			n.mu.Unlock()
			return nil
		}
		rd := n.rn.Ready()
		n.mu.Unlock()
		if err := n.handleReady(&rd); err != nil {
			return err
		}
		if h := n.cfg.testHooks; h != nil && h.beforeAdvance != nil {
			n.readyProbe.enter(stageReadyTestHook)
			h.beforeAdvance()
		}
		n.readyProbe.enter(stageAdvance)
		n.mu.Lock()
		n.rn.Advance(rd)
		n.mu.Unlock()
	}
}

// handleReady follows raft's contract and the durability rules: a leader
// sends its appends while its own write is in flight (raft thesis 10.2.1);
// responses that promise something about this member's log or vote
// (append, vote and pre-vote responses), and every message of a follower
// or candidate, go only after the write is durable; a committed entry is
// applied only once it is durable on this member (etcd #14370). The commit
// index itself need not be durable first: Start raises a lost one to the
// applied index.
func (n *Node) handleReady(rd *raft.Ready) error {
	if rd.SoftState != nil {
		n.state.Store(int32(rd.SoftState.RaftState))
		n.setLeader(rd.SoftState.Lead)
	}
	for _, rs := range rd.ReadStates {
		select {
		case n.readStatec <- rs:
		default: // the read loop retries
		}
	}
	leader := n.state.Load() == int32(raft.StateLeader)
	if h := n.cfg.testHooks; h != nil && h.readyStart != nil {
		n.readyProbe.enter(stageReadyTestHook)
		h.readyStart(leader)
	}
	before, after := splitAfterPersist(coalesceAppends(rd.Messages, n.cfg.MaxSizePerMsg), leader)
	n.readyProbe.enter(stageSend)
	n.send(before)
	if !raft.IsEmptySnap(rd.Snapshot) {
		n.readyProbe.enter(stageSnapshot)
		if err := n.handleSnapshot(rd); err != nil {
			return err
		}
	}
	// Committed entries already durable here (below this Ready's new
	// entries) are applied while the Ready is saved; the rest wait for the
	// save (etcd's shouldWaitWALSync). Otherwise a batch committed by the
	// previous Ready would wait for the next batch's fsync too.
	durable, pending := splitDurable(rd.CommittedEntries, rd.Entries)
	if len(durable) > 0 {
		n.readyProbe.enter(stageApplyHandoff)
		n.applyc <- applyItem{ents: durable}
		if leader && len(rd.Entries) > 0 && n.alone() {
			// A lone voter has no follower to wait for: letting the
			// apply finish before the next synced write lets proposals
			// queue meanwhile, so each fsync carries a larger batch (the
			// group-commit loop's rhythm: apply, then fsync).
			n.readyProbe.enter(stageWaitApplied)
			if err := n.waitAppliedLocal(durable[len(durable)-1].Index); err != nil {
				return err
			}
		}
	}
	start := time.Now()
	appliedBefore := n.applied.Load()
	n.readyProbe.enter(stageLogSave)
	if err := n.log.Save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
		return fmt.Errorf("raftnode: persist: %w", err)
	}
	if rd.MustSync && (len(rd.Entries) > 0 || !raft.IsEmptyHardState(rd.HardState)) {
		// Pebble's WAL is ordered: the apply batches committed before
		// this synced write are durable with it.
		n.durableApplied.Store(max(n.durableApplied.Load(), appliedBefore))
		n.readyProbe.enter(stageTruncate)
		if err := n.maybeTruncate(); err != nil {
			return err
		}
	}
	if n.cfg.OnSave != nil && (len(rd.Entries) > 0 || !raft.IsEmptyHardState(rd.HardState)) {
		n.readyProbe.enter(stageOnSave)
		n.cfg.OnSave(time.Since(start), rd.MustSync)
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		n.term.Store(rd.HardState.Term)
		n.commit.Store(rd.HardState.Commit)
	}
	n.readyProbe.enter(stageSend)
	n.send(after)
	if len(pending) > 0 {
		n.readyProbe.enter(stageApplyHandoff)
		n.applyc <- applyItem{ents: pending}
	}
	return nil
}

// splitDurable splits committed entries into those stored by earlier
// Readies and those this Ready is about to store (raft's synchronous mode
// may commit entries in the same Ready that appends them).
func splitDurable(committed, appending []raftpb.Entry) (durable, pending []raftpb.Entry) {
	if len(appending) == 0 {
		return committed, nil
	}
	first := appending[0].Index
	i := len(committed)
	for i > 0 && committed[i-1].Index >= first {
		i--
	}
	return committed[:i], committed[i:]
}

// splitAfterPersist separates the messages that must wait for the Ready's
// write from those that may go before it. A leader's appends and
// heartbeats go before; so do the requests a follower forwards to the
// leader (MsgProp, MsgReadIndex): they carry no term and vouch for nothing
// in this member's log or vote, and holding them until the follower's own
// fsync would add that fsync to the latency of every write and
// linearizable read that reaches a follower. Everything else of a follower
// or candidate waits.
func splitAfterPersist(msgs []raftpb.Message, leader bool) (before, after []raftpb.Message) {
	early := func(t raftpb.MessageType) bool {
		switch t {
		case raftpb.MsgAppResp, raftpb.MsgVoteResp, raftpb.MsgPreVoteResp:
			return false
		case raftpb.MsgProp, raftpb.MsgReadIndex:
			return true
		}
		return leader
	}
	n := 0
	for i := range msgs {
		if early(msgs[i].Type) {
			n++
		}
	}
	switch n {
	case 0:
		return nil, msgs
	case len(msgs):
		return msgs, nil
	}
	before, after = make([]raftpb.Message, 0, n), make([]raftpb.Message, 0, len(msgs)-n)
	for _, m := range msgs {
		if early(m.Type) {
			before = append(before, m)
		} else {
			after = append(after, m)
		}
	}
	return before, after
}

func (n *Node) send(msgs []raftpb.Message) {
	if len(msgs) > 0 && n.tr != nil {
		n.heartbeats.observe(msgs, time.Now())
		n.tr.Send(msgs)
	}
}

func (n *Node) setLeader(lead uint64) {
	if n.leader.Swap(lead) == lead {
		return
	}
	n.heartbeats.reset()
	if lead != raft.None {
		n.leaderChanges.Add(1)
	}
	n.notifyMu.Lock()
	close(n.leaderChanged)
	n.leaderChanged = make(chan struct{})
	n.notifyMu.Unlock()
}

func (n *Node) setApplied(i uint64) {
	n.applied.Store(i)
	n.notifyMu.Lock()
	close(n.appliedc)
	n.appliedc = make(chan struct{})
	n.notifyMu.Unlock()
}

// applyLoop hands committed entries to the state machine, in order.
func (n *Node) applyLoop() {
	for {
		n.applyProbe.enter(stageIdle)
		it, ok := <-n.applyc
		if !ok {
			return
		}
		if n.Err() != nil {
			if it.snap != nil {
				it.snap.done <- n.Err()
			}
			continue // a fatal error: drain without applying
		}
		if it.snap != nil {
			n.applyProbe.enter(stageInstallSnap)
			err := n.installSnapshot(it.snap)
			it.snap.done <- err
			if err != nil {
				n.fail(err)
			}
			continue
		}
		if err := n.apply(it.ents); err != nil {
			n.fail(err)
		}
	}
}

func (n *Node) apply(ents []raftpb.Entry) error {
	var batch []Entry
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n.applyProbe.enter(stageApply)
		res, err := n.sm.Apply(batch)
		if err != nil {
			return fmt.Errorf("raftnode: apply: %w", err)
		}
		if len(res) != len(batch) {
			return fmt.Errorf("raftnode: state machine returned %d results for %d entries", len(res), len(batch))
		}
		n.applyProbe.enter(stageApplyNotify)
		n.setApplied(batch[len(batch)-1].Index)
		for i, e := range batch {
			if e.ID != 0 {
				n.wait.trigger(e.ID, result{val: res[i]})
			}
		}
		batch = batch[:0]
		return nil
	}
	for i := range ents {
		e := &ents[i]
		if e.Index <= n.applied.Load() {
			continue // applied before a restart
		}
		switch e.Type {
		case raftpb.EntryNormal:
			id, data, err := decodeEntry(e.Data)
			if err != nil {
				return fmt.Errorf("raftnode: entry %d: %w", e.Index, err)
			}
			batch = append(batch, Entry{Index: e.Index, Term: e.Term, ID: id, Data: data})
		case raftpb.EntryConfChange:
			if err := flush(); err != nil {
				return err
			}
			var rc raftpb.ConfChange
			if err := rc.Unmarshal(e.Data); err != nil {
				return fmt.Errorf("raftnode: conf change entry %d: %w", e.Index, err)
			}
			n.applyProbe.enter(stageConfChange)
			if err := n.applyConfChange(rc, e.Index, e.Term); err != nil {
				return err
			}
		default:
			return fmt.Errorf("raftnode: entry %d: unsupported type %v", e.Index, e.Type)
		}
	}
	return flush()
}

func (n *Node) applyConfChange(rc raftpb.ConfChange, index, term uint64) error {
	cc, err := confChangeFromRaft(rc, index, term)
	if err != nil {
		return err
	}
	var (
		confirmed bool
		cs        raftpb.ConfState
	)
	confirm := func() raftpb.ConfState {
		if !confirmed {
			confirmed = true
			n.mu.Lock()
			cs = *n.rn.ApplyConfChange(rc)
			n.confGen++
			n.mu.Unlock()
		}
		return cs
	}
	res, err := n.sm.ApplyConfChange(cc, confirm)
	if err != nil {
		return fmt.Errorf("raftnode: apply conf change %d: %w", index, err)
	}
	if !confirmed {
		// Rejected: raft still sees one change applied per entry, a no-op.
		n.mu.Lock()
		n.rn.ApplyConfChange(raftpb.ConfChange{Type: rc.Type, NodeID: raft.None})
		n.mu.Unlock()
	} else {
		n.confMu.Lock()
		n.conf = cs
		if cc.Type == RemoveMember {
			n.removed[cc.NodeID] = true
		}
		n.confMu.Unlock()
		if n.tr != nil && cc.NodeID != n.id {
			switch cc.Type {
			case AddMember, AddLearner, PromoteMember:
				if len(cc.PeerURLs) > 0 {
					n.tr.AddPeer(cc.NodeID, cc.PeerURLs)
				}
			case UpdateMember:
				n.tr.UpdatePeer(cc.NodeID, cc.PeerURLs)
			case RemoveMember:
				n.tr.RemovePeer(cc.NodeID)
			}
		}
	}
	n.setApplied(index)
	if cc.ID != 0 {
		n.wait.trigger(cc.ID, result{val: res})
	}
	if confirmed {
		n.campaignWanted.Store(true)
	}
	n.signal()
	if confirmed && cc.Type == RemoveMember && cc.NodeID == n.id {
		n.lg.Info("this member was removed from the cluster; stopping")
		n.fail(ErrRemoved)
	}
	return nil
}

// Propose replicates data and waits until this member has applied it,
// returning the state machine's result for it. While there is no leader
// (an election, a leadership transfer) it waits for one. If ctx ends first
// the entry may still be applied.
func (n *Node) Propose(ctx context.Context, data []byte) (any, error) {
	return n.ProposeTimeout(ctx, data, 0)
}

// ProposeTimeout is Propose that gives up with ErrTimeout once timeout (if
// not 0) has passed, within a tick (etcd's request timeout). Unlike a
// context deadline it costs no timer per proposal.
func (n *Node) ProposeTimeout(ctx context.Context, data []byte, timeout time.Duration) (any, error) {
	id := n.ids.next()
	payload := encodeEntry(id, data)
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	return n.propose(ctx, id, deadline, payload, nil)
}

// ProposeConfChange proposes a membership change and waits until it is
// applied here; the result is the state machine's (a rejection included).
// A promotion is refused with ErrLearnerNotReady unless the learner's log
// is within 90% of the leader's, as etcd does; it must be proposed on the
// leader (ErrNotLeader otherwise).
//
// NB: raft turns a conf change proposed while another is still being
// applied into an empty entry; its proposer then waits until ctx ends, as
// etcd's does.
func (n *Node) ProposeConfChange(ctx context.Context, cc ConfChange) (any, error) {
	if cc.Type == PromoteMember {
		if err := n.learnerReady(cc.NodeID); err != nil {
			return nil, err
		}
	}
	cc.ID = n.ids.next()
	rc, err := cc.toRaft()
	if err != nil {
		return nil, err
	}
	return n.propose(ctx, cc.ID, time.Time{}, nil, func() error {
		// raft turns a change proposed before it counts the previous one
		// as applied into an empty entry, whose proposer would wait for
		// nothing until ctx ends. raft counts entries applied at Advance,
		// which can come after this member's apply answered the previous
		// change's proposer (a client's member update then member add):
		// retry until raft has caught up with the apply.
		if n.rn.BasicStatus().Applied < n.applied.Load() {
			return raft.ErrProposalDropped
		}
		return n.rn.ProposeConfChange(rc)
	})
}

// propose submits a normal entry's payload through the ready loop's batch,
// or runs step (a conf change) under the raft mutex.
func (n *Node) propose(ctx context.Context, id uint64, deadline time.Time, payload []byte, step func() error) (any, error) {
	v, err := n.proposeWait(ctx, id, deadline, payload, step)
	if err != nil {
		n.proposalsFailed.Add(1)
	}
	return v, err
}

func (n *Node) proposeWait(ctx context.Context, id uint64, deadline time.Time, payload []byte, step func() error) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch, err := n.wait.register(id, deadline)
	if err != nil {
		return nil, err
	}
	for {
		changed := n.LeaderChangedNotify()
		if step == nil {
			n.enqueueProposal(id, payload)
			select {
			case r := <-ch:
				if !errors.Is(r.err, raft.ErrProposalDropped) {
					return r.val, r.err
				}
				err = r.err
			case <-ctx.Done():
				n.wait.cancel(id)
				return nil, ctx.Err()
			}
			// Refused by raft, so no longer registered: wait again.
			var rerr error
			if ch, rerr = n.wait.register(id, deadline); rerr != nil {
				return nil, rerr
			}
		} else {
			n.mu.Lock()
			if n.stopped {
				n.mu.Unlock()
				n.wait.cancel(id)
				return nil, n.stopError()
			}
			err = step()
			n.mu.Unlock()
			if err == nil {
				break
			}
		}
		if !errors.Is(err, raft.ErrProposalDropped) {
			n.wait.cancel(id)
			return nil, err
		}
		// Nothing was appended: there is no leader yet, a leadership
		// transfer is under way, or the uncommitted log is full. Like
		// etcd's, the proposal waits for that to pass, within ctx:
		// without a leader until one is known (raft logs every dropped
		// proposal), otherwise retrying every tick.
		retry := time.NewTimer(n.cfg.TickInterval)
		retryC := retry.C
		if n.leader.Load() == raft.None {
			retryC = nil
		}
		select {
		case <-changed:
		case <-retryC:
		case r := <-ch: // expired, or the node stopped
			retry.Stop()
			return r.val, r.err
		case <-ctx.Done():
			retry.Stop()
			n.wait.cancel(id)
			return nil, ctx.Err()
		case <-n.donec:
			retry.Stop()
			return nil, n.stopError()
		}
		retry.Stop()
	}
	n.signal()
	select {
	case r := <-ch:
		return r.val, r.err
	case <-ctx.Done():
		n.wait.cancel(id)
		return nil, ctx.Err()
	}
}

func (n *Node) learnerReady(id uint64) error {
	n.mu.Lock()
	st := n.rn.Status()
	n.mu.Unlock()
	if st.RaftState != raft.StateLeader {
		return ErrNotLeader
	}
	pr, ok := st.Progress[id]
	if !ok || !pr.IsLearner {
		return nil // the state machine rejects it with its own error
	}
	if float64(pr.Match) < float64(st.Progress[n.id].Match)*0.9 {
		return ErrLearnerNotReady
	}
	return nil
}

// Step hands a message from another member to raft. A follower's
// ReadIndex request to this leader joins the next read round instead, and
// the leader's answer to this follower goes straight to the read loop.
func (n *Node) Step(m raftpb.Message) error {
	if m.Type == raftpb.MsgReadIndex && len(m.Entries) == 1 && m.From != raft.None && n.state.Load() == int32(raft.StateLeader) {
		return n.joinRemoteRead(m)
	}
	if m.Type == raftpb.MsgReadIndexResp && len(m.Entries) == 1 && n.readStateFromLeader(m) {
		return nil
	}
	if isProbeCtx(m.Context) {
		// A leader's read-round probe and its answers (readprobe.go).
		if m.Type == raftpb.MsgHeartbeat && n.answerProbe(m) {
			return nil
		}
		if m.Type == raftpb.MsgHeartbeatResp && n.ackProbe(m) {
			return nil
		}
	}
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return ErrStopped
	}
	err := n.rn.Step(m)
	n.mu.Unlock()
	n.signal()
	return err
}

// ReportUnreachable tells raft a message to id could not be sent, so it
// probes that follower instead of streaming appends.
func (n *Node) ReportUnreachable(id uint64) {
	n.mu.Lock()
	if !n.stopped {
		n.rn.ReportUnreachable(id)
	}
	n.mu.Unlock()
}

// IsIDRemoved reports whether id belonged to a member removed from the
// cluster.
func (n *Node) IsIDRemoved(id uint64) bool {
	n.confMu.Lock()
	defer n.confMu.Unlock()
	return n.removed[id]
}

// ReportRemoved tells the node a peer refused it as a removed member (it
// missed its own removal while down or cut off): it stops with ErrRemoved,
// as etcd's member does on rafthttp's "removed" answer.
func (n *Node) ReportRemoved() {
	n.lg.Warn("a peer says this member was removed from the cluster; stopping")
	n.fail(ErrRemoved)
}

// ReportSnapshot tells raft how sending a snapshot to id ended.
func (n *Node) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	n.mu.Lock()
	if !n.stopped {
		n.rn.ReportSnapshot(id, status)
	}
	n.mu.Unlock()
	n.signal()
}

// TransferLeadership asks raft to hand leadership to transferee (etcd's
// move-leader) and waits until it has it. It must run on the leader.
func (n *Node) TransferLeadership(ctx context.Context, transferee uint64) error {
	if n.leader.Load() != n.id {
		return ErrNotLeader
	}
	if transferee == n.id {
		return nil
	}
	if !slices.Contains(n.ConfState().Voters, transferee) {
		return ErrBadTransferee
	}
	transfer := func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.stopped {
			return ErrStopped
		}
		n.rn.TransferLeader(transferee)
		return nil
	}
	if err := transfer(); err != nil {
		return err
	}
	n.signal()
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	// raft abandons a transfer that has not completed within an election
	// timeout (a slow transferee); while this member still leads, ask
	// again (raft ignores a repeat of a transfer in progress).
	again := time.NewTicker(time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval)
	defer again.Stop()
	for {
		changed := n.LeaderChangedNotify()
		if n.leader.Load() == transferee {
			return nil
		}
		select {
		case <-changed:
		case <-again.C:
			if n.leader.Load() == n.id {
				if err := transfer(); err != nil {
					return err
				}
				n.signal()
			}
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.donec:
			return n.stopError()
		}
	}
}

// Leader returns the current leader's ID, 0 when there is none (the
// server's ErrGRPCNoLeader and WithRequireLeader).
func (n *Node) Leader() uint64 { return n.leader.Load() }

// IsLeader reports whether this member leads.
func (n *Node) IsLeader() bool { return n.leader.Load() == n.id }

// Term returns the durable raft term.
func (n *Node) Term() uint64 { return n.term.Load() }

// CommittedIndex returns the durable commit index.
func (n *Node) CommittedIndex() uint64 { return n.commit.Load() }

// AppliedIndex returns the index of the last entry applied on this member.
func (n *Node) AppliedIndex() uint64 { return n.applied.Load() }

// LeaderChangedNotify returns a channel closed at the next leader change.
func (n *Node) LeaderChangedNotify() <-chan struct{} {
	n.notifyMu.Lock()
	defer n.notifyMu.Unlock()
	return n.leaderChanged
}

// ConfState returns the configuration as of the last applied change.
func (n *Node) ConfState() raftpb.ConfState {
	n.confMu.Lock()
	defer n.confMu.Unlock()
	return n.conf
}

// Metrics are the node's counters, pulled by the server's Prometheus
// collector under etcd's names (etcd_server_*).
type Metrics struct {
	// HasLeader: etcd_server_has_leader.
	HasLeader bool
	// IsLeader: etcd_server_is_leader.
	IsLeader bool
	// LeaderChanges counts changes to a new leader seen by this member
	// (etcd_server_leader_changes_seen_total).
	LeaderChanges uint64
	// Committed and Applied are the commit and applied indexes
	// (etcd_server_proposals_committed_total / _applied_total).
	Committed, Applied uint64
	// Pending is how many proposals wait to be applied here
	// (etcd_server_proposals_pending).
	Pending int
	// Failed counts proposals that ended in an error here, the caller's
	// deadline included (etcd_server_proposals_failed_total).
	Failed uint64
	// ReadIndexRounds counts linearizable-read rounds; RemoteReads the
	// followers' ReadIndex requests served by this leader's rounds.
	ReadIndexRounds, RemoteReads uint64
	// ReadIndexFailed counts rounds that failed (not for a stop);
	// SlowReadIndexes resent requests and answers to abandoned rounds
	// (etcd_server_read_indexes_failed_total / _slow_read_indexes_total).
	ReadIndexFailed, SlowReadIndexes uint64
	// InstallingSnapshot is true while a received snapshot is being
	// installed (etcd_server_snapshot_apply_in_progress_total).
	InstallingSnapshot bool
	// HeartbeatFailures counts the leader's heartbeats sent late, more
	// than twice the heartbeat interval after the previous one to the
	// same peer (etcd_server_heartbeat_send_failures_total).
	HeartbeatFailures uint64
	// LogTruncations counts truncations of the log; SnapshotsInstalled
	// the snapshots this member installed, and SnapshotInstallTime their
	// total duration.
	LogTruncations, SnapshotsInstalled uint64
	SnapshotInstallTime                time.Duration
	// ReadyLoop and ApplyLoop are the ready loop's and the apply
	// goroutine's stalls: a stage held past the watchdog's threshold
	// (5s), which it also logs.
	ReadyLoop, ApplyLoop LoopStall
}

// Metrics returns the node's counters.
func (n *Node) Metrics() Metrics {
	lead := n.leader.Load()
	return Metrics{
		HasLeader:          lead != raft.None,
		IsLeader:           lead == n.id,
		LeaderChanges:      n.leaderChanges.Load(),
		Committed:          n.commit.Load(),
		Applied:            n.applied.Load(),
		Pending:            n.wait.pending(),
		Failed:             n.proposalsFailed.Load(),
		ReadIndexRounds:    n.readRounds.Load(),
		RemoteReads:        n.remoteReads.Load(),
		ReadIndexFailed:    n.readFailed.Load(),
		SlowReadIndexes:    n.readSlow.Load(),
		InstallingSnapshot: n.snapStats.installing.Load(),
		HeartbeatFailures:  n.heartbeats.count(),

		LogTruncations:      n.snapStats.truncations.Load(),
		SnapshotsInstalled:  n.snapStats.installed.Load(),
		SnapshotInstallTime: time.Duration(n.snapStats.installNanos.Load()),

		ReadyLoop: n.readyWatch.metrics(),
		ApplyLoop: n.applyWatch.metrics(),
	}
}

// Status is a member's view of the group (etcd's Status RPC and
// endpoint status).
type Status struct {
	ID, Leader   uint64
	Term, Commit uint64
	Applied      uint64
	State        raft.StateType
	Voters       []uint64
	Learners     []uint64
}

// Status returns the member's current view.
func (n *Node) Status() Status {
	n.mu.Lock()
	bs := n.rn.BasicStatus()
	n.mu.Unlock()
	cs := n.ConfState()
	return Status{
		ID:       n.id,
		Leader:   bs.Lead,
		Term:     bs.Term,
		Commit:   bs.Commit,
		Applied:  n.applied.Load(),
		State:    bs.RaftState,
		Voters:   slices.Clone(cs.Voters),
		Learners: slices.Clone(cs.Learners),
	}
}
