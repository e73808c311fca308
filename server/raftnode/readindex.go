package raftnode

import (
	"context"
	"encoding/binary"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// readRound is one ReadIndex round shared by every reader that joined it.
type readRound struct {
	done  chan struct{}
	index uint64
	err   error
	// remote are followers' MsgReadIndex requests that reached this
	// leader before the round started; the round answers them too.
	remote []raftpb.Message
	// local counts this member's readers (readMu): a round with none does
	// not wait for this member's apply.
	local int
	// fns are ReadIndexFunc's callers (readMu), called once the round is
	// done.
	fns []func(uint64, error)
}

func newReadRound() *readRound { return &readRound{done: make(chan struct{})} }

// ReadIndex returns once this member has applied every entry committed
// before the call, so a read of the state machine after it is linearizable
// (raft's ReadIndex; etcd's linearizableReadNotify). Concurrent callers
// share one round, as etcd's read loop batches them: a caller joins the
// next round to start, never one already in flight. It returns the round's
// read index.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	n.readMu.Lock()
	r := n.readNext
	r.local++
	n.readMu.Unlock()
	select {
	case n.readc <- struct{}{}:
	default: // a round is already requested; r is its notifier or the next's
	}
	select {
	case <-r.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-n.donec:
		return 0, n.stopError()
	}
}

// ReadIndexFunc is ReadIndex for a caller that does not wait for the
// round: fn gets what ReadIndex would return, once, on a goroutine the
// round's callbacks share (one per round, not one per reader parked and
// woken; RATIONALE.md, "Linearizable one-key Ranges wait without a
// goroutine"). fn runs after the callbacks registered before it in the
// same round, so it must not block for long. Once the node stopped, fn is
// called at once, on the caller's goroutine.
func (n *Node) ReadIndexFunc(fn func(index uint64, err error)) {
	n.readMu.Lock()
	if n.readClosed {
		n.readMu.Unlock()
		fn(0, n.stopError())
		return
	}
	r := n.readNext
	r.local++
	r.fns = append(r.fns, fn)
	n.readMu.Unlock()
	select {
	case n.readc <- struct{}{}:
	default:
	}
}

// runReadFns calls a round's ReadIndexFunc callbacks.
func runReadFns(fns []func(uint64, error), index uint64, err error) {
	for _, fn := range fns {
		fn(index, err)
	}
}

func (n *Node) readLoop() {
	defer func() {
		// Callbacks of the round nobody will run now fail, as
		// ReadIndex's waiters do once the node is done.
		n.readMu.Lock()
		n.readClosed = true
		fns := n.readNext.fns
		n.readNext.fns = nil
		n.readMu.Unlock()
		runReadFns(fns, 0, n.stopError())
	}()
	again := false // the next round is already requested
	for {
		if !again {
			select {
			case <-n.readc:
			case <-n.stopc:
				return
			}
		}
		again = false
		n.readMu.Lock()
		r := n.readNext
		n.readNext = newReadRound()
		n.readMu.Unlock()
		n.readRounds.Add(1)
		var answers []raftpb.Message
		r.index, answers, r.err = n.requestReadIndex(r.remote)
		if r.err != nil && r.err != ErrStopped {
			n.readFailed.Add(1)
		}
		if len(answers) > 0 {
			// When the next round starts now, its probes take these
			// answers along (one frame per follower); otherwise, or if
			// this round's readers must first wait for the apply, they
			// go at once.
			select {
			case <-n.readc:
				again = true
			default:
			}
			if again && (r.local == 0 || n.applied.Load() >= r.index) {
				n.probes.carry = answers
			} else {
				n.send(answers)
			}
		}
		if r.err == nil && r.local > 0 {
			r.err = n.waitApplied(r.index)
		}
		close(r.done)
		if len(r.fns) > 0 {
			// Not on this goroutine: a callback may itself wait for a
			// round (the guard's catch-up after an unknown token).
			go runReadFns(r.fns, r.index, r.err)
		}
	}
}

// joinRemoteRead adds a follower's forwarded ReadIndex request to this
// leader's next read round instead of stepping it into raft, where every
// such request costs a heartbeat round of its own: one quorum round then
// serves the leader's readers and every follower's (see
// RATIONALE.md, "Followers' reads join the leader's round").
func (n *Node) joinRemoteRead(m raftpb.Message) error {
	select {
	case <-n.stopc:
		return ErrStopped
	default:
	}
	n.readMu.Lock()
	n.readNext.remote = append(n.readNext.remote, m)
	n.readMu.Unlock()
	n.remoteReads.Add(1)
	select {
	case n.readc <- struct{}{}:
	default:
	}
	return nil
}

// requestReadIndex runs one read round: with probes on a leader that can
// (readprobe.go), or else through raft's ReadIndex, which waits for a
// leader, resends the request every ReadIndexRetry until the leader
// answers, and fails when the leader changes, or with ErrNoLeader or
// ErrTimeout when ReadIndexTimeout passes. Like etcd's, a read during an
// election waits for its outcome rather than failing at once. The round
// also answers remote, followers' requests that joined it, while this
// member leads in the term it started in (the answers are returned, for
// the caller to send); otherwise they go to raft, which forwards them to
// the leader it knows (or drops them, and the followers ask again).
func (n *Node) requestReadIndex(remote []raftpb.Message) (uint64, []raftpb.Message, error) {
	if index, answers, ok, err := n.probeRead(remote); ok {
		return index, answers, err
	}
	if carry := n.probes.carry; len(carry) > 0 {
		n.probes.carry = nil
		n.send(carry)
	}
	timeout := time.NewTimer(n.cfg.ReadIndexTimeout)
	defer timeout.Stop()
	for {
		ch := n.LeaderChangedNotify()
		if n.leader.Load() != raft.None {
			break
		}
		select {
		case <-ch:
		case <-timeout.C:
			return 0, nil, ErrNoLeader
		case <-n.stopc:
			return 0, nil, ErrStopped
		}
	}
	leaderChanged := n.LeaderChangedNotify()
	rctx := binary.BigEndian.AppendUint64(nil, n.ids.next())
	var term uint64     // the term remote requests are answered in
	var leadTerm uint64 // the term this member led in at the last send
	send := func() error {
		n.mu.Lock()
		if n.stopped {
			n.mu.Unlock()
			return ErrStopped
		}
		st := n.rn.BasicStatus()
		leadTerm = 0
		if st.RaftState == raft.StateLeader {
			leadTerm = st.Term
		}
		stepped := false // something for the ready loop
		if len(remote) > 0 {
			if st.RaftState != raft.StateLeader || (term != 0 && st.Term != term) {
				for _, m := range remote {
					_ = n.rn.Step(m)
				}
				remote, term, stepped = nil, 0, true
			} else {
				term = st.Term
			}
		}
		var fwd []raftpb.Message
		if st.RaftState == raft.StateFollower && st.Lead != raft.None {
			fwd = []raftpb.Message{forwardReadIndex(n.id, st.Lead, rctx)}
		} else {
			n.rn.ReadIndex(rctx)
			stepped = true
		}
		n.mu.Unlock()
		if fwd != nil {
			n.send(fwd)
		}
		if stepped {
			n.signal()
		}
		return nil
	}
	if err := send(); err != nil {
		return 0, nil, err
	}
	retry := time.NewTicker(n.cfg.ReadIndexRetry)
	defer retry.Stop()
	for {
		select {
		case rs := <-n.readStatec:
			if string(rs.RequestCtx) == string(rctx) {
				if leadTerm != 0 {
					// Raft answers a leader's read once an entry of its
					// term is committed: later rounds in the term may
					// check their quorum themselves (readprobe.go).
					n.mu.Lock()
					if st := n.rn.BasicStatus(); st.RaftState == raft.StateLeader && st.Term == leadTerm {
						n.probes.term = leadTerm
					}
					n.mu.Unlock()
				}
				return rs.Index, readAnswers(n.id, remote, term, rs.Index), nil
			}
			// An answer to an earlier, abandoned round.
			n.readSlow.Add(1)
		case <-leaderChanged:
			return 0, nil, ErrLeaderChanged
		case <-retry.C:
			n.readSlow.Add(1) // etcd counts each retry of a round
			if err := send(); err != nil {
				return 0, nil, err
			}
		case <-timeout.C:
			return 0, nil, ErrTimeout
		case <-n.stopc:
			return 0, nil, ErrStopped
		}
	}
}

// waitApplied waits until this member has applied index, for at most
// ReadIndexTimeout: a round whose readers would wait for an apply that
// does not come (a stuck apply goroutine) fails with ErrTimeout instead of
// holding every later round, and the readers that wait without a context
// (ReadIndexFunc), for ever. The timer is the round's, made only when it
// has to wait.
func (n *Node) waitApplied(index uint64) error {
	var timeout *time.Timer
	for {
		n.notifyMu.Lock()
		ch := n.appliedc
		n.notifyMu.Unlock()
		if n.applied.Load() >= index {
			return nil
		}
		if timeout == nil {
			timeout = time.NewTimer(n.cfg.ReadIndexTimeout)
			defer timeout.Stop()
		}
		select {
		case <-ch:
		case <-timeout.C:
			return ErrTimeout
		case <-n.stopc:
			return ErrStopped
		}
	}
}

// forwardReadIndex is the MsgReadIndex raft's follower sends its leader for
// a ReadIndex call (no term: raft treats it as a forwarded local message).
// A follower's read loop sends it itself rather than through raft and the
// ready loop: raft would only address it and hand it to the next Ready,
// one goroutine hand-off and one Ready cycle per round on every follower.
func forwardReadIndex(from, lead uint64, rctx []byte) raftpb.Message {
	return raftpb.Message{Type: raftpb.MsgReadIndex, From: from, To: lead, Entries: []raftpb.Entry{{Data: rctx}}}
}

// readStateFromLeader hands a follower's read loop the ReadIndex answer m
// without stepping it into raft, when raft would only turn it into a
// ReadState for the next Ready: this member is a follower in m's term
// (raft ignores the answer in an earlier term, a candidate or leader drops
// it, and a later term must go through raft, which then follows the new
// leader). It reports whether it took m.
func (n *Node) readStateFromLeader(m raftpb.Message) bool {
	st, ok := n.runningStatus()
	if !ok || st.RaftState != raft.StateFollower || m.Term != st.Term {
		return false
	}
	select {
	case n.readStatec <- raft.ReadState{Index: m.Index, RequestCtx: m.Entries[0].Data}:
	default: // the read loop retries, as for a ReadState from a Ready
	}
	return true
}
