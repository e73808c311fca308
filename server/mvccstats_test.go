package server

import (
	"testing"
	"time"
)

// TestClusterMVCCCountsOnEveryMember: as etcd's, the mvcc put and delete
// counters count applied writes on every member, and a range only on the
// member that served it.
func TestClusterMVCCCountsOnEveryMember(t *testing.T) {
	ms := startCluster(t, 3)
	lead := waitLeader(t, ms)
	put(t, ms[lead], "k", "v")
	reader := others(ms, lead)[0]
	before := reader.s.applier.MVCCStats().Counts().Ranges
	get(t, reader, "k", false)
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range ms {
		for m.s.applier.MVCCStats().Counts().Puts != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s counted %d puts, want 1", m.name, m.s.applier.MVCCStats().Counts().Puts)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if got := reader.s.applier.MVCCStats().Counts().Ranges - before; got != 1 {
		t.Errorf("the reader counted %d ranges, want 1", got)
	}
	if got := ms[lead].s.applier.MVCCStats().Counts().Ranges; got != 0 {
		t.Errorf("the leader counted %d ranges it did not serve", got)
	}
}
