package raftnode

import (
	"context"
	"encoding/binary"
	"time"

	"go.etcd.io/raft/v3"
)

// readRound is one ReadIndex round shared by every reader that joined it.
type readRound struct {
	done  chan struct{}
	index uint64
	err   error
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

func (n *Node) readLoop() {
	for {
		select {
		case <-n.readc:
		case <-n.stopc:
			return
		}
		n.readMu.Lock()
		r := n.readNext
		n.readNext = newReadRound()
		n.readMu.Unlock()
		n.readRounds.Add(1)
		r.index, r.err = n.requestReadIndex()
		if r.err == nil {
			r.err = n.waitApplied(r.index)
		}
		close(r.done)
	}
}

// requestReadIndex runs one raft ReadIndex: it waits for a leader, resends
// the request every ReadIndexRetry until the leader answers, and fails when
// the leader changes, or with ErrNoLeader or ErrTimeout when
// ReadIndexTimeout passes. Like etcd's, a read during an election waits for
// its outcome rather than failing at once.
func (n *Node) requestReadIndex() (uint64, error) {
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
			return 0, ErrNoLeader
		case <-n.stopc:
			return 0, ErrStopped
		}
	}
	leaderChanged := n.LeaderChangedNotify()
	rctx := binary.BigEndian.AppendUint64(nil, n.ids.next())
	send := func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.stopped {
			return ErrStopped
		}
		n.rn.ReadIndex(rctx)
		return nil
	}
	if err := send(); err != nil {
		return 0, err
	}
	n.signal()
	retry := time.NewTicker(n.cfg.ReadIndexRetry)
	defer retry.Stop()
	for {
		select {
		case rs := <-n.readStatec:
			if string(rs.RequestCtx) == string(rctx) {
				return rs.Index, nil
			}
			// An answer to an earlier, abandoned round.
		case <-leaderChanged:
			return 0, ErrLeaderChanged
		case <-retry.C:
			if err := send(); err != nil {
				return 0, err
			}
			n.signal()
		case <-timeout.C:
			return 0, ErrTimeout
		case <-n.stopc:
			return 0, ErrStopped
		}
	}
}

func (n *Node) waitApplied(index uint64) error {
	for {
		n.notifyMu.Lock()
		ch := n.appliedc
		n.notifyMu.Unlock()
		if n.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-n.stopc:
			return ErrStopped
		}
	}
}
