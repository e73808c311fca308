package server

import (
	"testing"
)

// TestClusterLeaderHandsOverOnStop is etcd's TestGracefulShutdown: a
// leader that stops gracefully transfers leadership first, so the cluster
// has a new leader, in the next term, before the old leader's node stops
// (without the handover the followers, with pre-vote and check-quorum,
// cannot elect anyone before its heartbeats stop). A stopped node learns
// nothing more, so what the old node knew when it stopped shows the order:
// it must already have seen its successor, in the next term.
func TestClusterLeaderHandsOverOnStop(t *testing.T) {
	ms := startCluster(t, 3)
	lead := waitLeader(t, ms)
	waitConnected(t, ms)
	lead = waitLeader(t, ms) // waitConnected takes seconds; a slow machine may have re-elected
	old, term := ms[lead].s.ids.Member, ms[lead].s.node.Term()
	oldNode := ms[lead].s.node
	ms[lead].stop(t)
	<-oldNode.Done()
	successor := oldNode.Leader()
	if successor == 0 || successor == old {
		t.Fatalf("the old leader stopped knowing leader %x, not a successor", successor)
	}
	if got := oldNode.Term(); got != term+1 {
		t.Fatalf("the old leader stopped in term %d, want %d", got, term+1)
	}
	// A loaded machine may delay heartbeats past the election timeout and
	// elect again later; in the handover's term the leader is the successor.
	next := ms[waitLeader(t, ms)]
	if got := next.s.node.Term(); got == term+1 && next.s.ids.Member != successor {
		t.Fatalf("the leader in term %d is %x, the handover named %x", got, next.s.ids.Member, successor)
	}
}
