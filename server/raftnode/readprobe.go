package raftnode

import (
	"encoding/binary"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// A leader's read round off the ready loop (RATIONALE.md, "A leader's read
// round checks its quorum itself"). Raft's ReadOnlySafe records the commit
// index, sends a heartbeat carrying the request's context to every
// follower, and confirms the index once a quorum answered that heartbeat
// in the leader's term. The read loop does the same itself: it records the
// commit index under the raft mutex, sends the heartbeats (probes) to as
// many followers as a quorum needs, and counts their MsgHeartbeatResp as
// they arrive in Node.Step. Raft's ready loop is not woken for either, on
// the leader or on the followers, which answer a probe in Node.Step.
//
// Probes are raft's MsgHeartbeat, told apart from raft's own heartbeats by
// their context (probeMark and a request ID): a member of an older build
// steps one into raft, which answers it as any heartbeat, so mixed builds
// keep working. Raft's own heartbeats, which reset a follower's election
// timer, still go through raft.

// probeMark starts a probe's context; raft's read contexts are 8-byte IDs.
const probeMark = 0xfe

// probeCtxLen is a probe context's length: the mark and a request ID.
const probeCtxLen = 9

func isProbeCtx(ctx []byte) bool { return len(ctx) == probeCtxLen && ctx[0] == probeMark }

// readProbes is the state of a leader's probe rounds.
type readProbes struct {
	// Owned by the read loop.
	term   uint64   // raft answered a read of this member as leader in this term
	gen    uint64   // confGen when followers was taken
	loaded bool     // followers and need are valid for gen and term
	simple bool     // the configuration is not joint and this member votes
	peers  []uint64 // the other voters
	need   int      // followers' acks a quorum needs
	// lastAck is the round in which each follower last answered a probe
	// in time; a round probes those that answered most recently first.
	lastAck map[uint64]uint64
	seq     uint64
	rtt     time.Duration // smoothed round duration, for the fallback
	timer   *time.Timer
	// carry are answers to followers' requests of the previous round,
	// sent with this round's probes (one frame per follower).
	carry []raftpb.Message

	// mu guards cur, which Node.Step updates as acks arrive.
	mu    sync.Mutex
	cur   *readProbe
	donec chan struct{} // cap 1: cur has its quorum
}

// readProbe is one probe round in flight.
type readProbe struct {
	ctx   []byte
	term  uint64
	peers []uint64 // who may ack: the other voters
	need  int
	acked []uint64
}

// probeRead runs one ReadIndex round with probes when this member leads
// in a term in which raft already answered one of its reads (so an entry
// of the term is committed, raft's condition for a read index) and the
// configuration is a simple majority with this member in it. ok false:
// none of that holds, or the configuration changed during the round; the
// caller then runs the round through raft. answers are MsgReadIndexResp
// for remote, to send.
func (n *Node) probeRead(remote []raftpb.Message) (index uint64, answers []raftpb.Message, ok bool, err error) {
	f := &n.probes
	if n.state.Load() != int32(raft.StateLeader) {
		return 0, nil, false, nil // a follower's round: no raft mutex twice
	}
	leaderChanged := n.LeaderChangedNotify()
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return 0, nil, true, ErrStopped
	}
	st := n.rn.BasicStatus()
	if st.RaftState != raft.StateLeader || st.Term != f.term {
		n.mu.Unlock()
		return 0, nil, false, nil
	}
	if !f.loaded || f.gen != n.confGen {
		f.load(n.id, n.rn.Status().Config)
		f.gen = n.confGen
	}
	gen := n.confGen
	n.mu.Unlock()
	if !f.simple {
		return 0, nil, false, nil
	}
	index = st.Commit
	f.seq++
	if f.need == 0 {
		// The only voter: raft answers its reads at once too.
		return index, readAnswers(n.id, remote, st.Term, index), true, nil
	}
	if n.tr == nil {
		return 0, nil, false, nil
	}
	ctx := binary.BigEndian.AppendUint64([]byte{probeMark}, n.ids.next())
	p := &readProbe{ctx: ctx, term: st.Term, peers: f.peers, need: f.need}
	f.mu.Lock()
	f.cur = p
	f.mu.Unlock()
	select {
	case <-f.donec: // a late signal of an earlier round
	default:
	}
	defer func() {
		f.mu.Lock()
		f.cur = nil
		f.mu.Unlock()
	}()

	// Probe as many followers as a quorum needs: first those that get
	// answers in this frame anyway, then those that answered lately.
	targets := f.pick(f.carry)
	msgs := make([]raftpb.Message, 0, len(targets)+len(f.carry))
	for _, id := range targets {
		msgs = append(msgs, probeMsg(n.id, id, st.Term, ctx))
	}
	// The answers after the probes: a follower acks the probe first and
	// then wakes its read loop, whose next request then often leaves in
	// the same frame as the ack.
	msgs = append(msgs, f.carry...)
	f.carry = nil
	start := time.Now()
	n.tr.Send(msgs)
	// Until the first ack: after a few round durations the others are
	// probed too (a follower may be down), then every ReadIndexRetry.
	fallback := min(max(4*f.rtt, 2*time.Millisecond), n.cfg.ReadIndexRetry)
	if f.timer == nil {
		f.timer = time.NewTimer(fallback)
	} else {
		f.timer.Reset(fallback)
	}
	defer f.timer.Stop()
	retried := false
	for {
		select {
		case <-f.donec:
			f.mu.Lock()
			done := len(p.acked) >= p.need
			acked := slices.Clone(p.acked)
			f.mu.Unlock()
			if !done {
				continue
			}
			n.mu.Lock()
			stopped := n.stopped
			st2 := n.rn.BasicStatus()
			same := st2.RaftState == raft.StateLeader && st2.Term == st.Term
			confSame := n.confGen == gen
			n.mu.Unlock()
			if stopped {
				return 0, nil, true, ErrStopped
			}
			if !same {
				return 0, nil, true, ErrLeaderChanged
			}
			if !confSame {
				return 0, nil, false, nil
			}
			for _, id := range acked {
				f.lastAck[id] = f.seq
			}
			if !retried {
				d := time.Since(start)
				if f.rtt == 0 {
					f.rtt = d
				} else {
					f.rtt += (d - f.rtt) / 8
				}
			}
			return index, readAnswers(n.id, remote, st.Term, index), true, nil
		case <-f.timer.C:
			if time.Since(start) >= n.cfg.ReadIndexTimeout {
				return 0, nil, true, ErrTimeout
			}
			if retried {
				n.readSlow.Add(1) // etcd counts each retry of a round
			}
			retried = true
			f.mu.Lock()
			var again []raftpb.Message
			for _, id := range p.peers {
				if !slices.Contains(p.acked, id) {
					again = append(again, probeMsg(n.id, id, st.Term, ctx))
				}
			}
			f.mu.Unlock()
			n.tr.Send(again)
			f.timer.Reset(min(n.cfg.ReadIndexRetry, n.cfg.ReadIndexTimeout-time.Since(start)))
		case <-leaderChanged:
			return 0, nil, true, ErrLeaderChanged
		case <-n.stopc:
			return 0, nil, true, ErrStopped
		}
	}
}

// load takes the followers and the quorum from raft's configuration.
func (f *readProbes) load(self uint64, cfg tracker.Config) {
	f.loaded = true
	f.peers = nil // a round in flight may still hold the old slice
	if f.lastAck == nil {
		f.lastAck = map[uint64]uint64{}
	}
	voters := cfg.Voters[0]
	_, in := voters[self]
	f.simple = len(cfg.Voters[1]) == 0 && in
	if !f.simple {
		return
	}
	for id := range voters {
		if id != self {
			f.peers = append(f.peers, id)
		}
	}
	slices.Sort(f.peers)
	f.need = len(voters)/2 + 1 - 1 // a majority, this member's vote included
}

func probeMsg(from, to, term uint64, ctx []byte) raftpb.Message {
	return raftpb.Message{Type: raftpb.MsgHeartbeat, From: from, To: to, Term: term, Context: ctx}
}

// pick returns the followers to probe: f.need of them, those that get
// answers in this frame (carry) before the others, and among each the
// most recent to ack first.
func (f *readProbes) pick(carry []raftpb.Message) []uint64 {
	rank := func(id uint64) uint64 {
		r := f.lastAck[id]
		for i := range carry {
			if carry[i].To == id {
				return r + 1<<62
			}
		}
		return r
	}
	peers := slices.Clone(f.peers)
	slices.SortStableFunc(peers, func(a, b uint64) int {
		ra, rb := rank(a), rank(b)
		switch {
		case ra > rb:
			return -1
		case ra < rb:
			return 1
		}
		return 0
	})
	return peers[:f.need]
}

// ackProbe counts a follower's answer to the probe in flight. It reports
// whether raft may be spared m: anything but an answer from a later term
// (which must make this member step down) only tells raft that the
// follower is alive, which its own heartbeats tell it too.
func (n *Node) ackProbe(m raftpb.Message) bool {
	if m.Term > n.term.Load() {
		return false
	}
	f := &n.probes
	f.mu.Lock()
	p := f.cur
	if p != nil && string(m.Context) == string(p.ctx) && m.Term == p.term &&
		slices.Contains(p.peers, m.From) && !slices.Contains(p.acked, m.From) {
		p.acked = append(p.acked, m.From)
		if len(p.acked) == p.need {
			select {
			case f.donec <- struct{}{}:
			default:
			}
		}
	}
	f.mu.Unlock()
	return true
}

// answerProbe answers a leader's probe as raft's follower answers a
// heartbeat, when this member follows m's sender in m's term; anything
// else (a new term, a candidate) goes through raft. It reports whether it
// answered.
func (n *Node) answerProbe(m raftpb.Message) bool {
	st, ok := n.runningStatus()
	if !ok || st.RaftState != raft.StateFollower || st.Term != m.Term || st.Lead != m.From || n.tr == nil {
		return false
	}
	n.tr.Send([]raftpb.Message{{Type: raftpb.MsgHeartbeatResp, From: n.id, To: m.From, Term: m.Term, Context: m.Context}})
	return true
}

// runningStatus is raft's basic status, ok false once the node stopped.
func (n *Node) runningStatus() (st raft.BasicStatus, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return st, false
	}
	return n.rn.BasicStatus(), true
}

// readAnswers are the MsgReadIndexResp raft's leader would send remote's
// senders for a read index confirmed in term.
func readAnswers(self uint64, remote []raftpb.Message, term, index uint64) []raftpb.Message {
	if len(remote) == 0 {
		return nil
	}
	msgs := make([]raftpb.Message, len(remote))
	for i, m := range remote {
		msgs[i] = raftpb.Message{Type: raftpb.MsgReadIndexResp, To: m.From, From: self, Term: term, Index: index, Entries: m.Entries}
	}
	return msgs
}
