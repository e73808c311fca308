package raftnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// snapshotCluster is a cluster of n members truncating every count entries.
func snapshotCluster(t *testing.T, n int, count uint64) *cluster {
	c := newCluster(t, n)
	for _, m := range c.members {
		m.snapshotCount = count
	}
	return c
}

func proposeN(t *testing.T, m *member, prefix string, n int) {
	t.Helper()
	for i := range n {
		propose(t, m, fmt.Sprint(prefix, i))
	}
}

func (c *cluster) waitAllApplied(t *testing.T, index uint64) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprint("every member to apply ", index), func() bool {
		for _, m := range c.members {
			if m.node != nil && m.node.AppliedIndex() < index {
				return false
			}
		}
		return true
	})
}

func TestLogTruncationKeepsLogBounded(t *testing.T) {
	const count = 40
	c := snapshotCluster(t, 3, count)
	c.startAll()
	lead := c.leader(t)
	proposeN(t, lead, "v", 400)
	c.waitAllApplied(t, lead.node.AppliedIndex())
	for _, m := range c.members {
		first, _ := m.log.FirstIndex()
		last, _ := m.log.LastIndex()
		if first <= 1 {
			t.Errorf("member %s: log not truncated (first index %d)", FormatID(m.id), first)
		}
		// At most count entries since the last truncation, plus the
		// catch-up tail, plus what is appended but not yet applied.
		if n := last - first + 1; n > 2*count+20 {
			t.Errorf("member %s: %d entries in the log [%d, %d]", FormatID(m.id), n, first, last)
		}
		if mt := m.node.Metrics(); mt.LogTruncations == 0 {
			t.Errorf("member %s: no truncation counted", FormatID(m.id))
		}
		// The truncated state survives a restart.
		m.stop()
		m.restart()
		if f2, _ := m.log.FirstIndex(); f2 != first {
			t.Errorf("member %s: first index %d after restart, was %d", FormatID(m.id), f2, first)
		}
	}
	lead = c.leader(t)
	propose(t, lead, "after")
	c.waitConverged(t, 401)
}

func TestFollowerCatchesUpBySnapshot(t *testing.T) {
	c := snapshotCluster(t, 3, 30)
	// The first snapshot sent is corrupted on the wire: refused by its
	// checksum, and sent again.
	var corrupt atomic.Int32
	corrupt.Store(1)
	for _, m := range c.members {
		m.wrap = func(m *member, cfg *Config) {
			m.tr.cfg.snapshotFrameHook = func(frame []byte) {
				if corrupt.Add(-1) >= 0 {
					frame[len(frame)/2] ^= 0x5a
				}
			}
		}
	}
	c.startAll()
	lead := c.leader(t)
	proposeN(t, lead, "a", 20)
	follower := c.follower(lead)
	c.waitAllApplied(t, lead.node.AppliedIndex())
	follower.stop()
	proposeN(t, lead, "b", 200)
	if first, _ := lead.log.FirstIndex(); first <= follower.sm.applied+1 {
		t.Fatalf("the leader's log still holds what the follower needs (first %d, follower applied %d)", first, follower.sm.applied)
	}
	follower.restart()
	c.waitAllApplied(t, lead.node.AppliedIndex())
	data := c.waitConverged(t, 220)
	if len(data) != 220 || data[0] != "a0" || data[219] != "b199" {
		t.Fatalf("converged on %d payloads %q…", len(data), data[:3])
	}
	if n := follower.sm.installCount(); n == 0 {
		t.Fatal("the follower caught up without installing a snapshot")
	}
	if mt := follower.node.Metrics(); mt.SnapshotsInstalled == 0 || mt.InstallingSnapshot {
		t.Fatalf("metrics %+v", mt)
	}
	// Every installed snapshot was received and saved first (a corrupted
	// one is refused before it counts).
	if n, inst := follower.saved.Load(), follower.node.Metrics().SnapshotsInstalled; n < int64(inst) {
		t.Fatalf("%d snapshots saved, %d installed", n, inst)
	}
	if corrupt.Load() >= 0 {
		t.Fatal("the corrupting hook never ran")
	}
	byPeer, _, _ := follower.tr.SnapshotMetrics()
	if s := byPeer[lead.id]; s.ReceiveFailures == 0 || s.ReceiveSuccess == 0 {
		t.Fatalf("follower's snapshot counters from the leader: %+v", s)
	}
	byPeer, _, _ = lead.tr.SnapshotMetrics()
	if s := byPeer[follower.id]; s.SendFailures == 0 || s.SendSuccess == 0 {
		t.Fatalf("leader's snapshot counters to the follower: %+v", s)
	}
	// Staged snapshots are gone once installed.
	if n := follower.snaps.stagedCount(); n != 0 {
		t.Fatalf("%d staged snapshots left", n)
	}
	// The member's own key was neither sent nor replaced.
	if _, closer, err := follower.db.Get(smKey('l', 0)); err == nil {
		closer.Close()
		t.Fatal("a local key arrived with the snapshot")
	}
	// It goes on from the snapshot: writes, a restart, writes.
	propose(t, lead, "c0")
	follower.stop()
	follower.restart()
	lead = c.leader(t)
	propose(t, lead, "c1")
	c.waitConverged(t, 222)
}

func TestLocalKeysSurviveSnapshot(t *testing.T) {
	c := snapshotCluster(t, 3, 20)
	c.startAll()
	lead := c.leader(t)
	follower := c.follower(lead)
	// Each member has its own value under the local key.
	for _, m := range c.members {
		if err := m.db.Set(smKey('l', 0), []byte(FormatID(m.id)), nil); err != nil {
			t.Fatal(err)
		}
	}
	proposeN(t, lead, "a", 5)
	c.waitAllApplied(t, lead.node.AppliedIndex())
	follower.stop()
	proposeN(t, lead, "b", 100)
	follower.restart()
	c.waitConverged(t, 105)
	if follower.sm.installCount() == 0 {
		t.Fatal("no snapshot installed")
	}
	v, closer, err := follower.db.Get(smKey('l', 0))
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	if string(v) != FormatID(follower.id) {
		t.Fatalf("local key holds %q after the snapshot, want the follower's own %q", v, FormatID(follower.id))
	}
}

func TestNewMemberAndLearnerCatchUpBySnapshot(t *testing.T) {
	for _, learner := range []bool{false, true} {
		t.Run(fmt.Sprint("learner=", learner), func(t *testing.T) {
			c := snapshotCluster(t, 3, 30)
			c.startAll()
			lead := c.leader(t)
			proposeN(t, lead, "v", 150)
			g := newGate(t)
			now := time.Now()
			id, _ := MemberID([]string{g.url()}, testToken, &now)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			typ := AddMember
			if learner {
				typ = AddLearner
			}
			res, err := lead.node.ProposeConfChange(ctx, ConfChange{Type: typ, NodeID: id, PeerURLs: []string{g.url()}})
			if err != nil {
				t.Fatal(err)
			}
			if err, _ := res.(error); err != nil {
				t.Fatal(err)
			}
			nm := &member{t: t, id: id, dir: t.TempDir(), gate: g, snapshotCount: 30}
			c.members = append(c.members, nm)
			nm.start(c.clusterID, c.initialPeers(), false)
			c.waitConverged(t, 150)
			if nm.sm.installCount() == 0 {
				t.Fatal("the new member caught up without a snapshot")
			}
			// Its membership came with the snapshot: it knows every member.
			if got := len(nm.sm.peers()); got != 4 {
				t.Fatalf("new member knows %d members", got)
			}
			if learner {
				lead = c.leader(t)
				waitFor(t, 10*time.Second, "the leader to see the learner in sync", func() bool {
					res, err = lead.node.ProposeConfChange(ctx, ConfChange{Type: PromoteMember, NodeID: id})
					return !errors.Is(err, ErrLearnerNotReady)
				})
				if err != nil {
					t.Fatal(err)
				}
				if err, _ := res.(error); err != nil {
					t.Fatal(err)
				}
			}
			propose(t, c.leader(t), "after")
			c.waitConverged(t, 151)
			if st := nm.node.Status(); !slices.Contains(st.Voters, id) {
				t.Fatalf("the new member is not a voter: %+v", st)
			}
		})
	}
}

// TestCrashDuringInstall stops a member at each step of an install, as a
// crash would, and restarts it: it holds the old state or the new one, and
// catches up.
func TestCrashDuringInstall(t *testing.T) {
	for _, step := range []string{"staged", "ingested"} {
		t.Run(step, func(t *testing.T) {
			c := snapshotCluster(t, 3, 20)
			c.startAll()
			lead := c.leader(t)
			proposeN(t, lead, "a", 10)
			c.waitAllApplied(t, lead.node.AppliedIndex())
			follower := c.follower(lead)
			follower.stop()
			before := follower.sm.applied
			proposeN(t, lead, "b", 100)
			crashed := errors.New("crash")
			follower.wrap = func(m *member, _ *Config) {
				m.snaps.testHook = func(at string) error {
					if at == step {
						return crashed
					}
					return nil
				}
			}
			follower.restart()
			select {
			case <-follower.node.Done():
			case <-time.After(20 * time.Second):
				t.Fatal("the install did not fail")
			}
			if err := follower.node.Err(); !errors.Is(err, crashed) {
				t.Fatalf("node stopped with %v", err)
			}
			follower.srv.Stop()
			follower.node.Stop()
			follower.tr.Close()
			follower.db.Close()
			follower.node = nil
			follower.wrap = nil
			staged, _ := os.ReadDir(filepath.Join(follower.dir, "snap.tmp"))
			follower.restart()
			if n, _ := os.ReadDir(filepath.Join(follower.dir, "snap.tmp")); len(n) != 0 {
				t.Fatalf("staging directory not emptied at start: %v", n)
			}
			applied := follower.sm.applied
			switch step {
			case "staged":
				// The old state: what its own log held, which may be
				// an entry past before (committed while it stopped,
				// learnt from the leader's first heartbeat), but none
				// of the writes only the snapshot carries.
				newer := slices.ContainsFunc(follower.sm.snapshotData(), func(d string) bool { return strings.HasPrefix(d, "b") })
				if applied < before || newer || len(staged) == 0 {
					t.Fatalf("after a crash before the ingest: applied %d (was %d), snapshot's writes applied %v, %d staged", applied, before, newer, len(staged))
				}
			case "ingested":
				first, _ := follower.log.FirstIndex()
				if applied <= before || first != applied+1 {
					t.Fatalf("after a crash after the ingest: applied %d (was %d), log starts at %d", applied, before, first)
				}
			}
			lead = c.leader(t)
			propose(t, lead, "after")
			c.waitConverged(t, 111)
		})
	}
}

// TestSlowSnapshotHoldsTruncation: while a snapshot is on its way, the
// leader goes on writing past the snapshot count; it keeps the entries
// after the snapshot, so the follower catches up from the log after one
// snapshot instead of needing another.
func TestSlowSnapshotHoldsTruncation(t *testing.T) {
	c := snapshotCluster(t, 3, 20)
	var slow atomic.Bool
	for _, m := range c.members {
		m.wrap = func(m *member, cfg *Config) {
			m.tr.cfg.snapshotFrameHook = func([]byte) {
				if slow.Load() {
					time.Sleep(time.Second)
				}
			}
		}
	}
	c.startAll()
	lead := c.leader(t)
	follower := c.follower(lead)
	proposeN(t, lead, "a", 10)
	c.waitAllApplied(t, lead.node.AppliedIndex())
	follower.stop()
	proposeN(t, lead, "b", 100)
	slow.Store(true)
	follower.restart()
	waitFor(t, 10*time.Second, "a snapshot on its way", func() bool {
		_, sending, _ := lead.tr.SnapshotMetrics()
		return sending > 0
	})
	proposeN(t, lead, "c", 100) // five snapshot counts while it travels
	slow.Store(false)
	c.waitConverged(t, 210)
	byPeer, _, _ := lead.tr.SnapshotMetrics()
	if s := byPeer[follower.id]; s.SendSuccess != 1 {
		t.Fatalf("%d snapshots sent to the follower (%+v), want 1", s.SendSuccess, s)
	}
	if n := follower.sm.installCount(); n != 1 {
		t.Fatalf("the follower installed %d snapshots, want 1", n)
	}
	// Once it has caught up, the log is truncated again.
	proposeN(t, lead, "d", 60)
	c.waitAllApplied(t, lead.node.AppliedIndex())
	if first, _ := lead.log.FirstIndex(); first < lead.node.AppliedIndex()-60 {
		t.Fatalf("the leader's log was not truncated after the catch-up: first %d, applied %d", first, lead.node.AppliedIndex())
	}
}

func TestReplacedSpans(t *testing.T) {
	got := replacedSpans('R', [][]byte{[]byte("mz"), []byte("ma")})
	var s []string
	for _, sp := range got {
		s = append(s, fmt.Sprintf("[%q,%q)", sp.start, sp.end))
	}
	want := []string{`["\x00","R")`, `["S","ma")`, `["ma\x00","mz")`, `["mz\x00","\xff")`}
	if !slices.Equal(s, want) {
		t.Fatalf("spans %v, want %v", s, want)
	}
}

// TestFailedSnapshotsDoNotHoldTruncation: a follower that refused its
// snapshot (it arrived corrupted) and went away does not keep the
// leader's log from being truncated; it catches up once back.
func TestFailedSnapshotsDoNotHoldTruncation(t *testing.T) {
	const count = 20
	c := snapshotCluster(t, 3, count)
	var corrupt atomic.Bool
	for _, m := range c.members {
		m.wrap = func(m *member, cfg *Config) {
			m.tr.cfg.snapshotFrameHook = func(frame []byte) {
				if corrupt.Load() {
					frame[len(frame)-1] ^= 1
				}
			}
		}
	}
	c.startAll()
	lead := c.leader(t)
	follower := c.follower(lead)
	proposeN(t, lead, "a", 10)
	c.waitAllApplied(t, lead.node.AppliedIndex())
	follower.stop()
	proposeN(t, lead, "b", 60)
	corrupt.Store(true)
	follower.restart()
	waitFor(t, 10*time.Second, "a refused snapshot", func() bool {
		byPeer, _, _ := lead.tr.SnapshotMetrics()
		return byPeer[follower.id].SendFailures > 0
	})
	// Then it is gone (unreachable: an attempt in flight fails too), and
	// no later attempt replaces the failed one's hold.
	follower.stop()
	follower.gate.setDown(true)
	proposeN(t, lead, "c", 200)
	first, _ := lead.log.FirstIndex()
	if applied := lead.node.AppliedIndex(); first+3*count < applied {
		t.Fatalf("the leader's log holds [%d, %d] while snapshots to a follower fail", first, applied)
	}
	corrupt.Store(false)
	follower.gate.setDown(false)
	follower.restart()
	c.waitConverged(t, 270)
}
