package raftnode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

func TestSingleMemberElectsAndApplies(t *testing.T) {
	c := newCluster(t, 1)
	var saves, synced atomic.Int64
	c.members[0].wrap = func(_ *member, cfg *Config) {
		cfg.OnSave = func(_ time.Duration, sync bool) {
			saves.Add(1)
			if sync {
				synced.Add(1)
			}
		}
	}
	start := time.Now()
	c.startAll()
	m := c.leader(t)
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("a sole voter took %v to lead", el)
	}
	var last uint64
	for i := range 20 {
		idx := propose(t, m, fmt.Sprint("v", i))
		if idx <= last {
			t.Fatalf("index %d after %d", idx, last)
		}
		last = idx
	}
	if got := m.node.AppliedIndex(); got != last {
		t.Fatalf("applied %d, want %d", got, last)
	}
	st := m.node.Status()
	if st.Leader != m.id || st.State != raft.StateLeader || st.Applied != last || st.Commit < last || st.Term == 0 {
		t.Fatalf("status %+v", st)
	}
	if !slices.Equal(st.Voters, []uint64{m.id}) {
		t.Fatalf("voters %v", st.Voters)
	}
	if mt := m.node.Metrics(); !mt.HasLeader || !mt.IsLeader || mt.LeaderChanges != 1 || mt.Applied != last || mt.Pending != 0 || mt.Failed != 0 {
		t.Fatalf("metrics %+v", mt)
	}
	if s, y := saves.Load(), synced.Load(); y < 20 || s < y {
		t.Fatalf("OnSave saw %d saves, %d synced, for 20 proposals", s, y)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.node.Propose(ctx, []byte("canceled")); err == nil {
		t.Fatal("a canceled proposal succeeded")
	}
	if f := m.node.Metrics().Failed; f != 1 {
		t.Fatalf("failed proposals %d, want 1", f)
	}
	// Restart from storage: the same state, and writes continue after it.
	m.stop()
	m.restart()
	c.leader(t)
	if got := m.node.AppliedIndex(); got < last {
		t.Fatalf("applied %d after restart, want ≥ %d", got, last)
	}
	idx := propose(t, m, "after-restart")
	data := m.sm.snapshotData()
	if len(data) != 21 || data[20] != "after-restart" || data[0] != "v0" {
		t.Fatalf("state after restart: %q", data)
	}
	if idx <= last {
		t.Fatalf("index went back: %d ≤ %d", idx, last)
	}
}

// A store whose state predates its log (today's single-node data
// directory) opens as a one-member group at its applied index.
func TestAdoptExistingState(t *testing.T) {
	c := newCluster(t, 1)
	m := c.members[0]
	m.wrap = func(m *member, cfg *Config) {
		if m.sm.applied == 0 {
			// What the server's state machine will report for an old data
			// directory: its applied count and a one-voter configuration.
			m.sm.applied = 41
			m.sm.cs.Voters = []uint64{m.id}
		}
	}
	c.startAll()
	c.leader(t)
	if idx := propose(t, m, "x"); idx <= 41 {
		t.Fatalf("first entry at %d, want after the adopted index 41", idx)
	}
}

func TestThreeMembersApplyInSameOrder(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	c.leader(t)
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 30 {
				if err := proposeRetry(m, fmt.Sprintf("m%d-%d", i, j)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.waitConverged(t, 90)
}

// waitConverged waits until every running member applied the same payloads
// (at least want of them).
func (c *cluster) waitConverged(t testing.TB, want int) []string {
	t.Helper()
	var ref []string
	waitFor(t, 10*time.Second, "members to converge", func() bool {
		ref = nil
		first := true
		for _, m := range c.members {
			if m.node == nil {
				continue
			}
			d := m.sm.snapshotData()
			if first {
				ref, first = d, false
			} else if !slices.Equal(ref, d) {
				return false
			}
		}
		return len(ref) >= want
	})
	return ref
}

func TestLeaderFailoverLosesNoAcknowledgedWrite(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	old := c.leader(t)
	var acked []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	for i, m := range c.members {
		if m == old {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ctx.Err() == nil; j++ {
				v := fmt.Sprintf("w%d-%d", i, j)
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := m.node.Propose(pctx, []byte(v))
				pcancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, v)
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	old.stop()
	lead := c.leader(t)
	if lead == old {
		t.Fatal("the stopped member still leads")
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	propose(t, lead, "after-failover")
	old.restart()
	final := c.waitConverged(t, 1)
	have := map[string]bool{}
	for _, v := range final {
		if have[v] {
			t.Fatalf("%q applied twice", v)
		}
		have[v] = true
	}
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 3 {
		t.Fatalf("only %d writes acknowledged", len(acked))
	}
	for _, v := range append(acked, "after-failover") {
		if !have[v] {
			t.Fatalf("acknowledged write %q lost", v)
		}
	}
}

func TestPartitionedMemberCannotCommit(t *testing.T) {
	for _, cutLeader := range []bool{false, true} {
		t.Run(map[bool]string{false: "follower", true: "leader"}[cutLeader], func(t *testing.T) {
			testPartition(t, cutLeader)
		})
	}
}

const partitionReadTimeout = 1500 * time.Millisecond

func testPartition(t *testing.T, cutLeader bool) {
	c := newCluster(t, 3)
	for _, m := range c.members {
		m.wrap = func(_ *member, cfg *Config) { cfg.ReadIndexTimeout = partitionReadTimeout }
	}
	c.startAll()
	lead := c.leader(t)
	propose(t, lead, "before")
	var cut *member
	for _, m := range c.members {
		if (m == lead) == cutLeader {
			cut = m
			break
		}
	}
	cut.gate.setDown(true)
	if cutLeader {
		// The majority elects a leader of its own; the old one steps down
		// when it misses a quorum (check-quorum).
		waitFor(t, 5*time.Second, "a new leader in the majority", func() bool {
			for _, m := range c.members {
				if m != cut && m.node.Leader() != 0 && m.node.Leader() != cut.id {
					return true
				}
			}
			return false
		})
		for _, m := range c.members {
			if m != cut {
				lead = m
			}
		}
	}
	// The minority: a proposal there is never applied, and it loses its
	// leader (pre-vote keeps its term), so linearizable reads fail.
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	_, err := cut.node.Propose(ctx, []byte("minority"))
	cancel()
	if err == nil {
		t.Fatal("a partitioned member committed a write")
	}
	waitFor(t, 5*time.Second, "the partitioned member to lose its leader", func() bool { return cut.node.Leader() == 0 })
	// A read there waits for a leader (as during an election), then fails
	// with ErrNoLeader after ReadIndexTimeout.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	start := time.Now()
	if _, err := cut.node.ReadIndex(ctx); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("linearizable read on the minority: %v, want ErrNoLeader", err)
	}
	cancel()
	if el := time.Since(start); el < partitionReadTimeout/2 {
		t.Fatalf("the minority's read failed after %v, before its timeout", el)
	}
	// The majority continues (proposed on either of its members).
	for i := range 10 {
		propose(t, lead, fmt.Sprint("majority-", i))
	}
	if _, err := lead.node.ReadIndex(context.Background()); err != nil {
		t.Fatalf("read on the majority: %v", err)
	}
	cut.gate.setDown(false)
	data := c.waitConverged(t, 11)
	if slices.Contains(data, "minority") {
		// It may have been forwarded before the cut took effect only if it
		// was acknowledged; it was not.
		t.Fatalf("the minority's unacknowledged write was applied: %q", data)
	}
}

func TestReadIndexWaitsForApply(t *testing.T) {
	c := newCluster(t, 1)
	m := c.members[0]
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock() // a failing test must not leave the apply blocked
	var block sync.Once
	blocking := make(chan struct{})
	m.wrap = func(m *member, cfg *Config) {
		m.sm.beforeApply = func(ents []Entry) {
			for _, e := range ents {
				if string(e.Data) == "slow" {
					block.Do(func() { close(blocking) })
					<-release
				}
			}
		}
	}
	c.startAll()
	c.leader(t)
	go m.node.Propose(context.Background(), []byte("slow"))
	<-blocking
	type res struct {
		idx uint64
		err error
	}
	const readers = 50
	out := make(chan res, readers)
	roundsBefore := m.node.readRounds.Load()
	for range readers {
		go func() {
			idx, err := m.node.ReadIndex(context.Background())
			out <- res{idx, err}
		}()
	}
	select {
	case r := <-out:
		t.Fatalf("ReadIndex returned %v before the write it must see was applied", r)
	case <-time.After(200 * time.Millisecond):
	}
	slowIndex := m.node.CommittedIndex()
	unblock()
	for range readers {
		r := <-out
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.idx < slowIndex {
			t.Fatalf("read index %d below the committed write at %d", r.idx, slowIndex)
		}
	}
	if m.node.AppliedIndex() < slowIndex {
		t.Fatal("readers released before the apply")
	}
	if rounds := m.node.readRounds.Load() - roundsBefore; rounds > 3 {
		t.Fatalf("%d readers took %d ReadIndex rounds; they should share", readers, rounds)
	}
}

func TestReadIndexOnFollowerSeesLeaderWrites(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	lead := c.leader(t)
	for i := range 20 {
		idx := propose(t, lead, fmt.Sprint("x", i))
		for _, m := range c.members {
			ri, err := m.node.ReadIndex(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if ri < idx || m.node.AppliedIndex() < idx {
				t.Fatalf("member %s: read index %d, applied %d, after a write at %d", FormatID(m.id), ri, m.node.AppliedIndex(), idx)
			}
		}
	}
}

func TestMembershipChanges(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	lead := c.leader(t)
	for i := range 5 {
		propose(t, lead, fmt.Sprint("pre", i))
	}
	// Add a learner: a new member joining with the existing members' URLs.
	g := newGate(t)
	now := time.Now()
	id, _ := MemberID([]string{g.url()}, testToken, &now)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := lead.node.ProposeConfChange(ctx, ConfChange{Type: AddLearner, NodeID: id, PeerURLs: []string{g.url()}})
	if err != nil || res == nil {
		t.Fatalf("add learner: %v %v", res, err)
	}
	if _, isErr := res.(error); isErr {
		t.Fatalf("add learner rejected: %v", res)
	}
	nm := &member{t: t, id: id, dir: t.TempDir(), gate: g}
	c.members = append(c.members, nm)
	nm.start(c.clusterID, c.initialPeers(), false)
	c.waitConverged(t, 5)
	if st := lead.node.Status(); !slices.Contains(st.Learners, id) || slices.Contains(st.Voters, id) {
		t.Fatalf("after add-learner: %+v", st)
	}
	// Promote it, on the leader, once it has caught up.
	waitFor(t, 5*time.Second, "the learner to catch up", func() bool { return nm.node.AppliedIndex() >= lead.node.AppliedIndex() })
	lead = c.leader(t)
	// The leader's view of the learner's log lags its acknowledgements.
	waitFor(t, 5*time.Second, "the leader to see the learner in sync", func() bool {
		res, err = lead.node.ProposeConfChange(ctx, ConfChange{Type: PromoteMember, NodeID: id})
		return !errors.Is(err, ErrLearnerNotReady)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, isErr := res.(error); isErr {
		t.Fatalf("promote rejected: %v", res)
	}
	waitFor(t, 5*time.Second, "the promotion to reach every member", func() bool {
		for _, m := range c.members {
			if !slices.Contains(m.node.ConfState().Voters, id) {
				return false
			}
		}
		return true
	})
	// A rejected change: removing an unknown member. Raft applies a no-op.
	if res, err = lead.node.ProposeConfChange(ctx, ConfChange{Type: RemoveMember, NodeID: 12345}); err != nil {
		t.Fatal(err)
	}
	if err, _ := res.(error); !errors.Is(err, errRejected) {
		t.Fatalf("removing an unknown member: %v", res)
	}
	// Remove a follower: it stops by itself, the rest continue.
	var victim *member
	for _, m := range c.members {
		if m != lead && m != nm {
			victim = m
			break
		}
	}
	if res, err = lead.node.ProposeConfChange(ctx, ConfChange{Type: RemoveMember, NodeID: victim.id}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-victim.node.Done():
		if !errors.Is(victim.node.Err(), ErrRemoved) {
			t.Fatalf("removed member stopped with %v", victim.node.Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the removed member did not stop")
	}
	victim.stop()
	propose(t, lead, "after-remove")
	if st := lead.node.Status(); len(st.Voters) != 3 || slices.Contains(st.Voters, victim.id) {
		t.Fatalf("voters after remove: %v", st.Voters)
	}
	// An ID once removed cannot come back.
	if res, _ = lead.node.ProposeConfChange(ctx, ConfChange{Type: AddMember, NodeID: victim.id, PeerURLs: []string{victim.gate.url()}}); res == nil {
		t.Fatal("no result")
	} else if err, _ := res.(error); !errors.Is(err, errRejected) {
		t.Fatalf("re-adding a removed ID: %v", res)
	}
	c.waitConverged(t, 6)
}

func TestPromoteNotReadyLearner(t *testing.T) {
	c := newCluster(t, 1)
	c.startAll()
	lead := c.leader(t)
	for i := range 50 {
		propose(t, lead, fmt.Sprint(i))
	}
	// A learner that never starts never catches up.
	g := newGate(t)
	id, _ := MemberID([]string{g.url()}, testToken, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := lead.node.ProposeConfChange(ctx, ConfChange{Type: AddLearner, NodeID: id, PeerURLs: []string{g.url()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := lead.node.ProposeConfChange(ctx, ConfChange{Type: PromoteMember, NodeID: id}); !errors.Is(err, ErrLearnerNotReady) {
		t.Fatalf("promote of a learner that is behind: %v", err)
	}
}

func TestTransferLeadership(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	lead := c.leader(t)
	to := c.follower(lead)
	if err := to.node.TransferLeadership(context.Background(), lead.id); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("transfer from a follower: %v", err)
	}
	if err := lead.node.TransferLeadership(context.Background(), 999); !errors.Is(err, ErrBadTransferee) {
		t.Fatalf("transfer to a stranger: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	changed := lead.node.LeaderChangedNotify()
	if err := lead.node.TransferLeadership(ctx, to.id); err != nil {
		t.Fatal(err)
	}
	<-changed
	if got := c.leader(t); got != to {
		t.Fatalf("leader %s after transfer to %s", FormatID(got.id), FormatID(to.id))
	}
	propose(t, lead, "via-new-leader")
}

func TestStopDrainsAndRefuses(t *testing.T) {
	c := newCluster(t, 1)
	c.startAll()
	m := c.leader(t)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.node.Propose(context.Background(), []byte(fmt.Sprint(i)))
			errs <- err
		}()
	}
	time.Sleep(time.Millisecond)
	n := m.node
	m.stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, ErrStopped) {
			t.Fatalf("proposal during stop: %v", err)
		}
	}
	if _, err := n.Propose(context.Background(), []byte("late")); !errors.Is(err, ErrStopped) {
		t.Fatalf("propose after stop: %v", err)
	}
	if _, err := n.ReadIndex(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("read after stop: %v", err)
	}
}

// A member removed while it was down learns it from its peers when it
// comes back, and stops.
func TestRemovedWhileDownStopsOnReturn(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	lead := c.leader(t)
	gone := c.follower(lead)
	gone.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := lead.node.ProposeConfChange(ctx, ConfChange{Type: RemoveMember, NodeID: gone.id}); err != nil {
		t.Fatal(err)
	}
	// Its log may hold entries it needs; the leader no longer sends them.
	gone.restart()
	select {
	case <-gone.node.Done():
		if !errors.Is(gone.node.Err(), ErrRemoved) {
			t.Fatalf("stopped with %v", gone.node.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a removed member kept running")
	}
	propose(t, lead, "still-serving")
}

// A read and a write issued while there is no leader yet are served once
// one is elected.
func TestRequestsWaitForElection(t *testing.T) {
	c := newCluster(t, 3)
	peers := c.initialPeers()
	// Start one member alone: it cannot elect anyone.
	c.members[0].start(c.clusterID, peers, true)
	t.Cleanup(c.stopAll)
	n := c.members[0].node
	done := make(chan error, 2)
	go func() {
		_, err := n.ReadIndex(context.Background())
		done <- err
	}()
	go func() {
		_, err := n.Propose(context.Background(), []byte("early"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a request without a leader returned %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	for _, m := range c.members[1:] {
		m.start(c.clusterID, peers, true)
	}
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a request did not complete after the election")
		}
	}
	if data := c.waitConverged(t, 1); data[0] != "early" {
		t.Fatalf("applied %q", data)
	}
}

// Proposers and readers on every member while leadership moves: a read
// that returns must see every write acknowledged before it started (on any
// member), and every member ends with the same log.
func TestHammerLinearizableReads(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	c.leader(t)
	var acked atomic.Uint64 // highest index of an acknowledged write
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	var reads, writes atomic.Int64
	for g := range 8 {
		m := c.members[g%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				if g%2 == 0 {
					pctx, pcancel := context.WithTimeout(ctx, time.Second)
					res, err := m.node.Propose(pctx, []byte(fmt.Sprintf("g%d-%d", g, i)))
					pcancel()
					if err == nil {
						idx := res.(uint64)
						for {
							cur := acked.Load()
							if idx <= cur || acked.CompareAndSwap(cur, idx) {
								break
							}
						}
						writes.Add(1)
					}
					continue
				}
				before := acked.Load()
				rctx, rcancel := context.WithTimeout(ctx, time.Second)
				_, err := m.node.ReadIndex(rctx)
				rcancel()
				if err != nil {
					continue // leader changes, timeouts: the client retries
				}
				if got := m.node.AppliedIndex(); got < before {
					t.Errorf("member %s: read returned with applied %d, below the acknowledged write at %d", FormatID(m.id), got, before)
					return
				}
				reads.Add(1)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	lead := c.leader(t)
	for _, m := range c.members {
		if m != lead {
			tctx, tcancel := context.WithTimeout(context.Background(), 3*time.Second)
			if err := lead.node.TransferLeadership(tctx, m.id); err != nil {
				t.Logf("transfer: %v", err)
			}
			tcancel()
			break
		}
	}
	wg.Wait()
	if reads.Load() < 3 || writes.Load() < 3 {
		t.Fatalf("only %d reads and %d writes", reads.Load(), writes.Load())
	}
	c.waitConverged(t, int(writes.Load()))
	t.Logf("%d writes, %d linearizable reads", writes.Load(), reads.Load())
}

// A member that moves to a new peer URL (etcd's member update) is reached
// there once the change is applied.
func TestUpdateMemberPeerURL(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	lead := c.leader(t)
	mover := c.follower(lead)
	mover.stop()
	newGateAddr := newGate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := lead.node.ProposeConfChange(ctx, ConfChange{Type: UpdateMember, NodeID: mover.id, PeerURLs: []string{newGateAddr.url()}})
	if err != nil {
		t.Fatal(err)
	}
	if err, _ := res.(error); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		propose(t, lead, fmt.Sprint("while-moving-", i))
	}
	// The old address is gone for good; the member comes back at the new one.
	mover.gate.setDown(true)
	mover.gate = newGateAddr
	mover.restart()
	c.waitConverged(t, 5)
}

// heartbeatCounter counts the heartbeats with a ReadIndex context (a read
// round's quorum check) a member sends.
type heartbeatCounter struct {
	Transport
	n *atomic.Int64
}

func (t heartbeatCounter) Send(msgs []raftpb.Message) {
	for _, m := range msgs {
		if m.Type == raftpb.MsgHeartbeat && len(m.Context) > 0 {
			t.n.Add(1)
		}
	}
	t.Transport.Send(msgs)
}

// Followers' ReadIndex requests are answered by the leader's own rounds:
// many concurrent reads on the followers cost the leader no more quorum
// checks than its rounds (raft alone runs one per forwarded request), and
// every read still sees the write acknowledged before it.
func TestFollowerReadsJoinLeaderRounds(t *testing.T) {
	c := newCluster(t, 3)
	var beats atomic.Int64
	for _, m := range c.members {
		m.wrap = func(_ *member, cfg *Config) {
			cfg.Transport = heartbeatCounter{Transport: cfg.Transport, n: &beats}
		}
	}
	c.startAll()
	lead := c.leader(t)
	for i := range 5 {
		idx := propose(t, lead, fmt.Sprint("w", i))
		before := lead.node.Metrics()
		beats0 := beats.Load()
		var wg sync.WaitGroup
		errs := make(chan error, 60)
		for _, m := range c.members {
			if m == lead {
				continue
			}
			for range 30 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ri, err := m.node.ReadIndex(context.Background())
					if err == nil && (ri < idx || m.node.AppliedIndex() < idx) {
						err = fmt.Errorf("member %s: read index %d, applied %d, after a write at %d", FormatID(m.id), ri, m.node.AppliedIndex(), idx)
					}
					if err != nil {
						errs <- err
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		after := lead.node.Metrics()
		if after.RemoteReads == before.RemoteReads {
			t.Fatal("no follower read was served by the leader's rounds")
		}
		rounds := int64(after.ReadIndexRounds - before.ReadIndexRounds)
		// Raft's periodic heartbeats carry a pending round's context too.
		if b := beats.Load() - beats0; b > 2*rounds+4 {
			t.Fatalf("%d read heartbeats for %d leader rounds: followers' requests did not share them", b, rounds)
		}
	}
}

// TestReadIndexAnswerOnFollower: the leader's answer to a follower's
// ReadIndex reaches the read loop directly only where raft would have
// turned it into a ReadState: on a follower, in the follower's term.
func TestReadIndexAnswerOnFollower(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	lead := c.leader(t)
	f := c.follower(lead)
	f.node.mu.Lock()
	term := f.node.rn.BasicStatus().Term
	f.node.mu.Unlock()
	answer := func(to *member, term uint64, ctx string) raftpb.Message {
		return raftpb.Message{Type: raftpb.MsgReadIndexResp, From: lead.id, To: to.id, Term: term, Index: 7, Entries: []raftpb.Entry{{Data: []byte(ctx)}}}
	}
	// An answer from an earlier term is dropped, as raft drops it.
	if err := f.node.Step(answer(f, term-1, "stale")); err != nil {
		t.Fatal(err)
	}
	// A leader drops an answer too.
	if err := lead.node.Step(answer(lead, term, "to-leader")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // a ready loop would have handed on a ReadState
	select {
	case rs := <-f.node.readStatec:
		t.Fatalf("follower took an answer from an earlier term: %+v", rs)
	case rs := <-lead.node.readStatec:
		t.Fatalf("leader took an answer: %+v", rs)
	default:
	}
	if err := f.node.Step(answer(f, term, "current")); err != nil {
		t.Fatal(err)
	}
	select {
	case rs := <-f.node.readStatec:
		if rs.Index != 7 || string(rs.RequestCtx) != "current" {
			t.Fatalf("read state %+v", rs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the answer in the follower's term did not reach the read loop")
	}
}

// Membership changes back to back on a lone voter: each is proposed as
// soon as the previous one was applied here, before raft is told of that
// apply (its Advance comes late), and none is turned into an empty entry
// that leaves its proposer waiting out its deadline.
func TestBackToBackConfChanges(t *testing.T) {
	c := newCluster(t, 1)
	var slow atomic.Bool
	c.members[0].wrap = func(_ *member, cfg *Config) {
		cfg.testHooks = &testHooks{beforeAdvance: func() {
			if slow.Load() {
				time.Sleep(50 * time.Millisecond)
			}
		}}
	}
	c.startAll()
	m := c.leader(t)
	slow.Store(true)
	defer slow.Store(false) // before the cleanup's Stop
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := m.node.ProposeConfChange(ctx, ConfChange{Type: AddLearner, NodeID: uint64(1001 + i), PeerURLs: []string{fmt.Sprintf("http://127.0.0.1:%d", 1+i)}})
		cancel()
		if err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		if err, _ := res.(error); err != nil {
			t.Fatalf("change %d refused: %v", i, err)
		}
	}
	if l := m.node.Status().Learners; len(l) != 3 {
		t.Fatalf("learners %v, want 3", l)
	}
}
