package raftnode

import (
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// TestHeartbeatWatch: a heartbeat to a peer more than twice the interval
// after the previous one to it counts; other messages, first heartbeats
// and the gap across a leadership change do not.
func TestHeartbeatWatch(t *testing.T) {
	h := newHeartbeatWatch(100 * time.Millisecond)
	t0 := time.Unix(1000, 0)
	hb := func(to ...uint64) []raftpb.Message {
		var ms []raftpb.Message
		for _, id := range to {
			ms = append(ms, raftpb.Message{Type: raftpb.MsgHeartbeat, To: id}, raftpb.Message{Type: raftpb.MsgApp, To: id})
		}
		return ms
	}
	h.observe(hb(2, 3), t0)
	h.observe(hb(2, 3), t0.Add(150*time.Millisecond))
	if n := h.count(); n != 0 {
		t.Fatalf("on-time heartbeats counted: %d", n)
	}
	h.observe(hb(2), t0.Add(400*time.Millisecond)) // 250ms after the last to 2
	if n := h.count(); n != 1 {
		t.Fatalf("late heartbeat: count %d, want 1", n)
	}
	h.observe([]raftpb.Message{{Type: raftpb.MsgApp, To: 3}}, t0.Add(time.Second))
	if n := h.count(); n != 1 {
		t.Fatalf("an append counted: %d", n)
	}
	h.reset()
	h.observe(hb(2, 3), t0.Add(5*time.Second))
	if n := h.count(); n != 1 {
		t.Fatalf("first heartbeats after a leader change counted: %d", n)
	}
	h.observe(hb(3), t0.Add(5*time.Second+300*time.Millisecond))
	if n := h.count(); n != 2 {
		t.Fatalf("late heartbeat to 3: count %d, want 2", n)
	}
}
