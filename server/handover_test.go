package server

import (
	"testing"
	"time"
)

// TestClusterLeaderHandsOverOnStop is etcd's TestGracefulShutdown: a
// leader that stops gracefully transfers leadership first, so a follower
// sees a new leader, in the next term, while the old leader's node is
// still running (without the handover the followers, with pre-vote and
// check-quorum, cannot elect anyone before its heartbeats stop).
func TestClusterLeaderHandsOverOnStop(t *testing.T) {
	ms := startCluster(t, 3)
	lead := waitLeader(t, ms)
	waitConnected(t, ms)
	old, term := ms[lead].s.ids.Member, ms[lead].s.node.Term()
	oldNode := ms[lead].s.node
	// The transferee knows it leads before the old leader learns it (and
	// only then stops); the other follower may hear of it later, so the
	// check looks at both.
	before := make(chan *clusterMember, 1)
	go func() {
		for {
			select {
			case <-oldNode.Done():
				before <- nil
				return
			default:
			}
			for _, f := range others(ms, lead) {
				if l := f.s.node.Leader(); l != 0 && l != old {
					before <- f
					return
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	ms[lead].stop(t)
	f := <-before
	if f == nil {
		t.Fatal("no new leader before the old leader's node stopped")
	}
	if got := f.s.node.Term(); got != term+1 {
		t.Fatalf("term after the handover: %d, want %d", got, term+1)
	}
}
