package reliability

import (
	"slices"
	"testing"
)

// syntheticCommitted is a small committed history: puts, a two-key txn, a
// delete and a revoke deleting two keys at one revision.
func syntheticCommitted() *Committed {
	c := &Committed{From: 2, To: 7, Revs: map[int64][]WatchEvent{}}
	var keys [NumKeys]KV
	put := func(rev int64, k int, v string) WatchEvent {
		prev := keys[k]
		kv := KV{Value: v, Create: rev, Mod: rev, Version: 1}
		if prev.Version > 0 {
			kv.Create, kv.Version = prev.Create, prev.Version+1
		}
		keys[k] = kv
		return WatchEvent{Rev: rev, Key: k, KV: kv, Prev: prev}
	}
	del := func(rev int64, k int) WatchEvent {
		prev := keys[k]
		keys[k] = KV{}
		return WatchEvent{Rev: rev, Key: k, Delete: true, KV: KV{Mod: rev}, Prev: prev}
	}
	c.Revs[2] = []WatchEvent{put(2, 0, "a")}
	c.Revs[3] = []WatchEvent{put(3, 1, "b")}
	c.Revs[4] = []WatchEvent{put(4, 0, "c"), put(4, 1, "c")}
	c.Revs[5] = []WatchEvent{del(5, 0)}
	c.Revs[6] = []WatchEvent{put(6, 2, "d")}
	c.Revs[7] = []WatchEvent{del(7, 1), del(7, 2)}
	return c
}

// TestWatchChecker proves each watch check on a hand-made recording: the
// faithful one passes, and each corruption fails the check it breaks.
func TestWatchChecker(t *testing.T) {
	c := syntheticCommitted()
	spec := WatchSpec{Name: "all+prev", Key: KeyPrefix, End: KeyPrefixEnd, PrevKV: true}
	evs := func(revs ...int64) WatchRecord {
		r := WatchRecord{Kind: RecEvents}
		for _, rev := range revs {
			r.Events = append(r.Events, c.Revs[rev]...)
			r.Rev = rev
		}
		return r
	}
	progress := func(rev int64) WatchRecord { return WatchRecord{Kind: RecProgress, Rev: rev} }
	created := func(start int64) WatchRecord { return WatchRecord{Kind: RecCreated, Start: start, Rev: start - 1} }
	good := []WatchRecord{
		created(2), evs(2), evs(3, 4), progress(4), evs(5),
		// the stream breaks; the watcher resumes after the newest it saw
		created(6), evs(6), {Kind: RecProgress, Rev: 6, Stream: true}, evs(7), progress(7),
	}
	if vs := CheckWatch(c, WatchRecording{Spec: spec, Start: 2, Records: good}, 7); len(vs) > 0 {
		t.Fatalf("faithful recording rejected: %v", vs)
	}
	// A single-key watcher without prev_kv sees only its key's events.
	key1 := WatchSpec{Name: "key1", Key: KeyName(1)}
	strip := func(evs ...WatchEvent) WatchRecord {
		r := WatchRecord{Kind: RecEvents}
		for _, ev := range evs {
			ev.Prev = KV{}
			r.Events = append(r.Events, ev)
			r.Rev = ev.Rev
		}
		return r
	}
	key1Good := []WatchRecord{created(2), progress(2), strip(c.Revs[3]...), strip(c.Revs[4][1]), progress(6), strip(c.Revs[7][0])}
	if vs := CheckWatch(c, WatchRecording{Spec: key1, Start: 2, Records: key1Good}, 7); len(vs) > 0 {
		t.Fatalf("faithful single-key recording rejected: %v", vs)
	}

	split := evs(4)
	split1, split2 := split, split
	split1.Events, split2.Events = split.Events[:1], split.Events[1:]
	altered := evs(5)
	altered.Events = slices.Clone(altered.Events)
	altered.Events[0].Prev.Value = "zzz"
	noPrev := evs(4)
	noPrev.Events = slices.Clone(noPrev.Events)
	noPrev.Events[0].Prev = KV{}
	headerOld := evs(3, 4)
	headerOld.Rev = 3
	cases := []struct {
		name  string
		recs  []WatchRecord
		check string
	}{
		{"an event response dropped", []WatchRecord{created(2), evs(2), evs(3, 4), progress(4), evs(6), evs(7)}, WatchReliable},
		{"the last revision never delivered", []WatchRecord{created(2), evs(2), evs(3, 4), evs(5), evs(6)}, WatchReliable},
		{"an event response duplicated", []WatchRecord{created(2), evs(2), evs(3, 4), evs(3, 4), evs(5), evs(6), evs(7)}, WatchUnique},
		{"responses out of order", []WatchRecord{created(2), evs(3, 4), evs(2), evs(5), evs(6), evs(7)}, WatchOrdered},
		{"header older than its events", []WatchRecord{created(2), evs(2), headerOld, evs(5), evs(6), evs(7)}, WatchOrdered},
		{"a revision split across responses", []WatchRecord{created(2), evs(2), evs(3), split1, split2, evs(5), evs(6), evs(7)}, WatchAtomic},
		{"a revoke's deletions split", []WatchRecord{created(2), evs(2, 3, 4, 5, 6), {Kind: RecEvents, Rev: 7, Events: c.Revs[7][:1]}, {Kind: RecEvents, Rev: 7, Events: c.Revs[7][1:]}}, WatchAtomic},
		{"an event altered", []WatchRecord{created(2), evs(2), evs(3, 4), altered, evs(6), evs(7)}, WatchReliable},
		{"prev_kv missing", []WatchRecord{created(2), evs(2), evs(3), noPrev, evs(5), evs(6), evs(7)}, WatchReliable},
		{"progress ahead of an undelivered event", []WatchRecord{created(2), evs(2), evs(3, 4), progress(5), evs(5), evs(6), evs(7)}, WatchProgress},
		{"stream progress ahead of an undelivered event", []WatchRecord{created(2), evs(2), {Kind: RecProgress, Rev: 3, Stream: true}, evs(3, 4), evs(5), evs(6), evs(7)}, WatchProgress},
		{"resumed past the newest revision seen", []WatchRecord{created(2), evs(2), evs(3, 4), evs(5), created(7), evs(7)}, WatchResumable},
		{"resumed stream skips its first revision", []WatchRecord{created(2), evs(2), evs(3, 4), evs(5), created(6), evs(7)}, WatchResumable},
		{"resumed stream repeats a revision", []WatchRecord{created(2), evs(2), evs(3, 4), evs(5), created(6), evs(5), evs(6), evs(7)}, WatchResumable},
		{"canceled by the server", []WatchRecord{created(2), evs(2), evs(3, 4), evs(5), evs(6), evs(7), {Kind: RecCanceled, Rev: 7}}, WatchCanceled},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			vs := CheckWatch(c, WatchRecording{Spec: spec, Start: 2, Records: cs.recs}, 7)
			if !slices.ContainsFunc(vs, func(v WatchViolation) bool { return v.Check == cs.check }) {
				t.Fatalf("want a %q violation, got %v", cs.check, vs)
			}
			t.Logf("rejected: %v", vs)
		})
	}
	t.Run("single-key watcher given another key's event", func(t *testing.T) {
		recs := slices.Clone(key1Good)
		recs = slices.Insert(recs, 2, strip(c.Revs[2]...))
		vs := CheckWatch(c, WatchRecording{Spec: key1, Start: 2, Records: recs}, 7)
		if !slices.ContainsFunc(vs, func(v WatchViolation) bool { return v.Check == WatchReliable }) {
			t.Fatalf("want a reliable violation, got %v", vs)
		}
	})
}
