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
	f := others(ms, lead)[0]
	before := make(chan bool, 1)
	go func() {
		for {
			select {
			case <-oldNode.Done():
				before <- false
				return
			default:
			}
			if l := f.s.node.Leader(); l != 0 && l != old {
				before <- true
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	ms[lead].stop(t)
	if !<-before {
		t.Fatal("no new leader before the old leader's node stopped")
	}
	if got := f.s.node.Term(); got != term+1 {
		t.Fatalf("term after the handover: %d, want %d", got, term+1)
	}
}
