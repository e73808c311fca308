package mvcc

import (
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// copyInto replaces dst's database contents by src's (what a Raft
// snapshot's ingest does under a member's store).
func copyInto(t *testing.T, dst, src *Store) func() error {
	return func() error {
		b := dst.db.NewBatch()
		defer b.Close()
		if err := b.DeleteRange([]byte{0}, []byte{0xff}, nil); err != nil {
			return err
		}
		it, err := src.db.NewIter(&pebble.IterOptions{})
		if err != nil {
			return err
		}
		for ok := it.First(); ok; ok = it.Next() {
			if err := b.Set(it.Key(), it.Value(), nil); err != nil {
				it.Close()
				return err
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
		return b.Commit(pebble.Sync)
	}
}

// TestReplaceResyncsWatchers: after the store's contents are replaced by
// newer ones, reads see them, writes continue from their revision, in-sync
// watchers get the revisions they missed from the change log, and a
// watcher whose next revision is compacted there is canceled with the
// compacted revision.
func TestReplaceResyncsWatchers(t *testing.T) {
	leader := newWatchEnv(t, HubOptions{})
	member := newWatchEnv(t, HubOptions{})
	for _, e := range []*watchEnv{leader, member} {
		e.put("a", "1") // rev 2
		e.put("b", "1") // rev 3
	}
	ws := member.h.NewStream()
	defer ws.Close()
	wa, _ := ws.Watch(WatchOptions{Key: []byte("a")})
	wb, _ := ws.Watch(WatchOptions{Key: []byte("b")})
	drain(t, ws)         // created
	leader.put("a", "2") // rev 4
	leader.put("b", "2") // rev 5
	leader.put("a", "3") // rev 6
	if err := member.s.Replace(copyInto(t, member.s, leader.s)); err != nil {
		t.Fatal(err)
	}
	member.h.Resync()
	if member.s.Rev() != 6 {
		t.Fatalf("revision %d after the replace, want 6", member.s.Rev())
	}
	events := map[int64][]int64{}
	for _, r := range drain(t, ws) {
		for _, ev := range r.Events {
			events[r.WatchID] = append(events[r.WatchID], ev.Kv.ModRevision)
		}
	}
	if got := events[wa]; len(got) != 2 || got[0] != 4 || got[1] != 6 {
		t.Fatalf("watcher on a got revisions %v, want [4 6]", got)
	}
	if got := events[wb]; len(got) != 1 || got[0] != 5 {
		t.Fatalf("watcher on b got revisions %v, want [5]", got)
	}
	// Writes go on from the new revision and reach the watchers live.
	member.put("a", "4")
	if member.s.Rev() != 7 {
		t.Fatalf("revision %d after a write, want 7", member.s.Rev())
	}
	rs := drain(t, ws)
	if len(rs) != 1 || rs[0].WatchID != wa || rs[0].Events[0].Kv.ModRevision != 7 {
		t.Fatalf("live event after the replace: %s", fmtResps(rs))
	}

	// The next replace brings a compaction past what the watchers need.
	leader.put("a", "4") // rev 7
	leader.put("b", "3") // rev 8
	leader.put("a", "5") // rev 9
	leader.compact(9)
	if err := member.s.Replace(copyInto(t, member.s, leader.s)); err != nil {
		t.Fatal(err)
	}
	member.h.Resync()
	if member.s.CompactRev() != 9 {
		t.Fatalf("compacted revision %d after the replace, want 9", member.s.CompactRev())
	}
	canceled := map[int64]int64{}
	for _, r := range drain(t, ws) {
		if r.Canceled {
			canceled[r.WatchID] = r.CompactRevision
		}
	}
	if canceled[wa] != 9 || canceled[wb] != 9 {
		t.Fatalf("cancels after a compacted replace: %v, want both at 9", canceled)
	}
}
