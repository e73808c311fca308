package raftnode

import (
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// heartbeatWatch counts the leader's late heartbeats as etcd's
// etcd_server_heartbeat_send_failures_total does: a heartbeat to a peer
// sent more than twice the heartbeat interval after the previous one to
// the same peer means the leader's loop was held up (a slow disk, an
// overloaded member) and followers may have started an election.
type heartbeatWatch struct {
	mu       sync.Mutex
	max      time.Duration
	last     map[uint64]time.Time
	failures uint64
}

func newHeartbeatWatch(interval time.Duration) *heartbeatWatch {
	return &heartbeatWatch{max: 2 * interval, last: map[uint64]time.Time{}}
}

// observe looks at the messages going out; only heartbeats are timed.
func (h *heartbeatWatch) observe(msgs []raftpb.Message, now time.Time) {
	for i := range msgs {
		if msgs[i].Type != raftpb.MsgHeartbeat {
			continue
		}
		h.mu.Lock()
		to := msgs[i].To
		if prev, ok := h.last[to]; ok && now.Sub(prev) > h.max {
			h.failures++
		}
		h.last[to] = now
		h.mu.Unlock()
	}
}

// reset forgets the send times: a member that becomes leader again starts
// its heartbeats afresh (the gap while it was not leader is no failure).
func (h *heartbeatWatch) reset() {
	h.mu.Lock()
	clear(h.last)
	h.mu.Unlock()
}

func (h *heartbeatWatch) count() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failures
}
