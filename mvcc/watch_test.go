package mvcc

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// watchEnv is a store and hub driven the way the apply loop drives them:
// each commit is one batch, published after it is durable. It records every
// published revision as the reference history.
type watchEnv struct {
	t       testing.TB
	s       *Store
	h       *Hub
	mu      sync.Mutex
	history []RevisionEvents
}

func newWatchEnv(t testing.TB, opts HubOptions) *watchEnv {
	t.Helper()
	s, err := Open("db", Options{FS: vfs.NewMem(), CompactionBatch: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &watchEnv{t: t, s: s, h: NewHub(s, opts)}
}

// commit runs each txn function as one transaction of a single batch.
func (e *watchEnv) commit(txns ...func(tx *WriteTxn)) {
	e.t.Helper()
	b, err := e.s.NewBatch()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, f := range txns {
		tx := b.Txn()
		f(tx)
		tx.End()
	}
	if err := b.Commit(); err != nil {
		e.t.Fatal(err)
	}
	evs := b.Events()
	e.mu.Lock()
	e.history = append(e.history, evs...)
	e.mu.Unlock()
	e.h.Publish(evs)
}

func (e *watchEnv) put(key, value string) {
	e.t.Helper()
	e.commit(func(tx *WriteTxn) {
		if _, _, err := tx.Put([]byte(key), []byte(value), 0); err != nil {
			e.t.Fatal(err)
		}
	})
}

func (e *watchEnv) del(key, end string) {
	e.t.Helper()
	e.commit(func(tx *WriteTxn) {
		var endB []byte
		if end != "" {
			endB = []byte(end)
		}
		if _, err := tx.DeleteRange([]byte(key), endB); err != nil {
			e.t.Fatal(err)
		}
	})
}

func (e *watchEnv) compact(rev int64) {
	e.t.Helper()
	b, err := e.s.NewBatch()
	if err != nil {
		e.t.Fatal(err)
	}
	done, err := b.Compact(rev)
	if err != nil {
		b.Abort()
		e.t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		e.t.Fatal(err)
	}
	<-done
}

// drain calls Next until the stream has nothing more to say.
func drain(t testing.TB, ws *WatchStream) []WatchResponse {
	t.Helper()
	var out []WatchResponse
	for {
		got, more, err := ws.Next(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, got...)
		if !more && len(got) == 0 {
			return out
		}
	}
}

func fmtEvent(ev *mvccpb.Event, withPrev bool) string {
	kv := func(k *mvccpb.KeyValue) string {
		if k == nil {
			return "-"
		}
		return fmt.Sprintf("%q=%q c=%d m=%d v=%d l=%d", k.Key, k.Value, k.CreateRevision, k.ModRevision, k.Version, k.Lease)
	}
	s := ev.Type.String() + " " + kv(ev.Kv)
	if withPrev {
		s += " prev " + kv(ev.PrevKv)
	}
	return s
}

func fmtResp(r WatchResponse) string {
	var b strings.Builder
	fmt.Fprintf(&b, "id=%d rev=%d", r.WatchID, r.Revision)
	if r.Created {
		b.WriteString(" created")
	}
	if r.Canceled {
		b.WriteString(" canceled")
	}
	if r.CompactRevision != 0 {
		fmt.Fprintf(&b, " compact=%d", r.CompactRevision)
	}
	if r.CancelReason != "" {
		fmt.Fprintf(&b, " reason=%q", r.CancelReason)
	}
	for _, ev := range r.Events {
		b.WriteString("\n  " + fmtEvent(ev, true))
	}
	return b.String()
}

func fmtResps(rs []WatchResponse) string {
	var out []string
	for _, r := range rs {
		out = append(out, fmtResp(r))
	}
	return strings.Join(out, "\n")
}

// wantResps compares responses in order, except that consecutive event
// responses to different watchers, whose relative order is unspecified (as
// in etcd), are compared sorted by watch id (each watcher's own order
// kept).
func wantResps(t *testing.T, got []WatchResponse, want string) {
	t.Helper()
	got = slices.Clone(got)
	for i := 0; i < len(got); {
		j := i + 1
		if len(got[i].Events) > 0 {
			for j < len(got) && len(got[j].Events) > 0 {
				j++
			}
			slices.SortStableFunc(got[i:j], func(a, b WatchResponse) int { return int(a.WatchID - b.WatchID) })
		}
		i = j
	}
	if g := fmtResps(got); g != strings.TrimSpace(want) {
		t.Errorf("responses:\n%s\nwant:\n%s", g, strings.TrimSpace(want))
	}
}

func TestWatchBasics(t *testing.T) {
	e := newWatchEnv(t, HubOptions{})
	ws := e.h.NewStream()
	defer ws.Close()
	e.put("a", "1") // rev 2
	if _, err := ws.Watch(WatchOptions{Key: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Watch(WatchOptions{Key: []byte("a"), End: []byte("c"), PrevKV: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Watch(WatchOptions{Key: []byte("b"), End: []byte{}, NoPut: true}); err != nil {
		t.Fatal(err)
	}
	var got []WatchResponse
	step := func(f func()) { f(); got = append(got, drain(t, ws)...) }
	step(func() {})
	step(func() { e.put("a", "2") })   // rev 3
	step(func() { e.put("b", "1") })   // rev 4
	step(func() { e.del("a", "zz") })  // rev 5
	step(func() { e.put("zzz", "1") }) // rev 6
	wantResps(t, got, `
id=0 rev=2 created
id=1 rev=2 created
id=2 rev=2 created
id=0 rev=3
  PUT "a"="2" c=2 m=3 v=2 l=0 prev -
id=0 rev=5
  DELETE "a"="" c=0 m=5 v=0 l=0 prev -
id=1 rev=3
  PUT "a"="2" c=2 m=3 v=2 l=0 prev "a"="1" c=2 m=2 v=1 l=0
id=1 rev=4
  PUT "b"="1" c=4 m=4 v=1 l=0 prev -
id=1 rev=5
  DELETE "a"="" c=0 m=5 v=0 l=0 prev "a"="2" c=2 m=3 v=2 l=0
  DELETE "b"="" c=0 m=5 v=0 l=0 prev "b"="1" c=4 m=4 v=1 l=0
id=2 rev=5
  DELETE "b"="" c=0 m=5 v=0 l=0 prev -
`)
}

// TestWatchBatch: a batch of several revisions reaches each watcher as one
// response (header at its newest revision), respecting start revisions and
// filters.
func TestWatchBatch(t *testing.T) {
	e := newWatchEnv(t, HubOptions{})
	ws := e.h.NewStream()
	defer ws.Close()
	ws.Watch(WatchOptions{Key: []byte("a")})
	ws.Watch(WatchOptions{Key: []byte("a"), End: []byte("c"), StartRev: 4, PrevKV: true})
	ws.Watch(WatchOptions{Key: []byte("a"), End: []byte("c"), NoDelete: true})
	ws.Watch(WatchOptions{Key: []byte("b")})
	drain(t, ws)
	put := func(k, v string) func(*WriteTxn) {
		return func(tx *WriteTxn) { tx.Put([]byte(k), []byte(v), 0) }
	}
	e.commit(put("a", "1"), put("b", "1"), put("a", "2"), func(tx *WriteTxn) { tx.DeleteRange([]byte("a"), nil) }, put("x", "1")) // 2..6
	wantResps(t, drain(t, ws), `
id=0 rev=5
  PUT "a"="1" c=2 m=2 v=1 l=0 prev -
  PUT "a"="2" c=2 m=4 v=2 l=0 prev -
  DELETE "a"="" c=0 m=5 v=0 l=0 prev -
id=1 rev=5
  PUT "a"="2" c=2 m=4 v=2 l=0 prev "a"="1" c=2 m=2 v=1 l=0
  DELETE "a"="" c=0 m=5 v=0 l=0 prev "a"="2" c=2 m=4 v=2 l=0
id=2 rev=4
  PUT "a"="1" c=2 m=2 v=1 l=0 prev -
  PUT "b"="1" c=3 m=3 v=1 l=0 prev -
  PUT "a"="2" c=2 m=4 v=2 l=0 prev -
id=3 rev=3
  PUT "b"="1" c=3 m=3 v=1 l=0 prev -
`)
	if !ws.RequestProgressAll() {
		t.Error("no progress after the batch")
	}
	e.put("b", "2") // 7: every watcher moved past the batch
	wantResps(t, drain(t, ws), `
id=-1 rev=6
id=1 rev=7
  PUT "b"="2" c=3 m=7 v=2 l=0 prev "b"="1" c=3 m=3 v=1 l=0
id=2 rev=7
  PUT "b"="2" c=3 m=7 v=2 l=0 prev -
id=3 rev=7
  PUT "b"="2" c=3 m=7 v=2 l=0 prev -
`)
}

// TestWatchResponseSizeCap: a batch or merged responses stay under
// mergeMaxBytes at revision boundaries; a revision bigger than that still
// goes whole.
func TestWatchResponseSizeCap(t *testing.T) {
	e := newWatchEnv(t, HubOptions{})
	ws := e.h.NewStream()
	defer ws.Close()
	ws.Watch(WatchOptions{Key: []byte("a"), End: []byte("c")})
	drain(t, ws)
	big := strings.Repeat("v", 400<<10)
	var txns []func(*WriteTxn)
	for i := range 5 {
		txns = append(txns, func(tx *WriteTxn) { tx.Put([]byte("a"), []byte(fmt.Sprint(i, big)), 0) })
	}
	txns = append(txns, func(tx *WriteTxn) { // one revision of 1.6 MiB
		for _, k := range []string{"b1", "b2", "b3", "b4"} {
			tx.Put([]byte(k), []byte(big), 0)
		}
	})
	e.commit(txns...) // revs 2..7
	e.put("a", big)   // 8: may join the last response if it fits
	var revs [][]int64
	for _, r := range drain(t, ws) {
		var rs []int64
		for _, ev := range r.Events {
			if len(rs) == 0 || rs[len(rs)-1] != ev.Kv.ModRevision {
				rs = append(rs, ev.Kv.ModRevision)
			}
		}
		revs = append(revs, rs)
	}
	want := [][]int64{{2, 3}, {4, 5}, {6}, {7}, {8}}
	if fmt.Sprint(revs) != fmt.Sprint(want) {
		t.Errorf("revisions per response %v, want %v", revs, want)
	}
}

// TestWatchMerge: while a watcher's response waits in the queue, later
// revisions join it, but never across a progress notification.
func TestWatchMerge(t *testing.T) {
	e := newWatchEnv(t, HubOptions{})
	ws := e.h.NewStream()
	defer ws.Close()
	ws.Watch(WatchOptions{Key: []byte("a"), End: []byte("c")})
	ws.Watch(WatchOptions{Key: []byte("b")})
	drain(t, ws)
	e.put("a", "1")               // 2
	e.put("b", "1")               // 3
	e.commit(func(tx *WriteTxn) { // 4
		tx.Put([]byte("a"), []byte("2"), 0)
		tx.Put([]byte("b"), []byte("2"), 0)
	})
	if !ws.RequestProgressAll() {
		t.Fatal("no progress")
	}
	e.put("a", "3") // 5
	wantResps(t, drain(t, ws), `
id=0 rev=4
  PUT "a"="1" c=2 m=2 v=1 l=0 prev -
  PUT "b"="1" c=3 m=3 v=1 l=0 prev -
  PUT "a"="2" c=2 m=4 v=2 l=0 prev -
  PUT "b"="2" c=3 m=4 v=2 l=0 prev -
id=1 rev=4
  PUT "b"="1" c=3 m=3 v=1 l=0 prev -
  PUT "b"="2" c=3 m=4 v=2 l=0 prev -
id=-1 rev=4
id=0 rev=5
  PUT "a"="3" c=2 m=5 v=3 l=0 prev -
`)
}

func TestWatchCreateErrorsAndIDs(t *testing.T) {
	e := newWatchEnv(t, HubOptions{})
	ws := e.h.NewStream()
	defer ws.Close()
	watch := func(o WatchOptions) {
		t.Helper()
		ws.Watch(o)
	}
	watch(WatchOptions{ID: 1, Key: []byte("a")})
	watch(WatchOptions{Key: []byte("a")})                   // auto: 0
	watch(WatchOptions{Key: []byte("a")})                   // auto: skips 1, gets 2
	watch(WatchOptions{ID: 2, Key: []byte("a")})            // duplicate
	watch(WatchOptions{Key: []byte("b"), End: []byte("a")}) // empty range
	watch(WatchOptions{Key: []byte("b"), End: []byte("b")}) // empty range
	ws.Reject("etcdserver: mvcc: required revision has been compacted")
	if !ws.Cancel(1) || ws.Cancel(1) || ws.Cancel(7) {
		t.Error("Cancel: want true for a live watcher only")
	}
	watch(WatchOptions{ID: 1, Key: []byte("a")}) // the id is free again
	wantResps(t, drain(t, ws), `
id=1 rev=1 created
id=0 rev=1 created
id=2 rev=1 created
id=-1 rev=1 created canceled reason="mvcc: duplicate watch ID provided on the WatchStream"
id=-1 rev=1 created canceled reason="mvcc: watcher range is empty"
id=-1 rev=1 created canceled reason="mvcc: watcher range is empty"
id=-1 rev=1 created canceled reason="etcdserver: mvcc: required revision has been compacted"
id=1 rev=1 canceled
id=1 rev=1 created
`)
}

func TestWatchFromHistory(t *testing.T) {
	for _, recent := range []int{1, 1 << 16} { // from Pebble, from memory
		t.Run(fmt.Sprintf("recent=%d", recent), func(t *testing.T) {
			e := newWatchEnv(t, HubOptions{RecentEvents: recent})
			e.put("a", "1")               // 2
			e.put("b", "1")               // 3
			e.commit(func(tx *WriteTxn) { // 4: two events
				tx.Put([]byte("a"), []byte("2"), 0)
				tx.Put([]byte("b"), []byte("2"), 0)
			})
			e.del("a", "") // 5
			ws := e.h.NewStream()
			defer ws.Close()
			ws.Watch(WatchOptions{Key: []byte("a"), StartRev: 2, PrevKV: true})
			ws.Watch(WatchOptions{Key: []byte("a"), End: []byte("c"), StartRev: 3, NoDelete: true})
			ws.Watch(WatchOptions{Key: []byte("b"), StartRev: 5}) // nothing to catch up
			ws.Watch(WatchOptions{Key: []byte("b"), StartRev: 6}) // the next revision: in sync
			wantResps(t, drain(t, ws), `
id=0 rev=5 created
id=1 rev=5 created
id=2 rev=5 created
id=3 rev=5 created
id=0 rev=5
  PUT "a"="1" c=2 m=2 v=1 l=0 prev -
  PUT "a"="2" c=2 m=4 v=2 l=0 prev "a"="1" c=2 m=2 v=1 l=0
  DELETE "a"="" c=0 m=5 v=0 l=0 prev "a"="2" c=2 m=4 v=2 l=0
id=1 rev=5
  PUT "b"="1" c=3 m=3 v=1 l=0 prev -
  PUT "a"="2" c=2 m=4 v=2 l=0 prev -
  PUT "b"="2" c=3 m=4 v=2 l=0 prev -
`)
			if ws.RequestProgressAll() {
				t.Fatal("RequestProgressAll: a watcher starting at a future revision is not in sync (etcd)")
			}
			e.put("b", "3") // 6
			if !ws.RequestProgressAll() {
				t.Fatal("RequestProgressAll: want a notification once every watcher is in sync")
			}
			wantResps(t, drain(t, ws), `
id=1 rev=6
  PUT "b"="3" c=3 m=6 v=3 l=0 prev -
id=2 rev=6
  PUT "b"="3" c=3 m=6 v=3 l=0 prev -
id=3 rev=6
  PUT "b"="3" c=3 m=6 v=3 l=0 prev -
id=-1 rev=6
`)
		})
	}
}

// TestWatchCatchUpBatches checks etcd's limit of 1000 revisions per
// response to a watcher catching up, and that it counts matching
// revisions only.
func TestWatchCatchUpBatches(t *testing.T) {
	for _, recent := range []int{1, 1 << 16} {
		t.Run(fmt.Sprintf("recent=%d", recent), func(t *testing.T) {
			e := newWatchEnv(t, HubOptions{RecentEvents: recent, CatchUpScan: 100})
			for i := range 2500 {
				e.put("k", fmt.Sprint(i)) // revs 2..2501
				e.put("other", "x")       // revs 3..2502
			}
			ws := e.h.NewStream()
			defer ws.Close()
			ws.Watch(WatchOptions{Key: []byte("k"), StartRev: 2})
			resps := drain(t, ws)
			var sizes []int
			next := int64(2)
			for _, r := range resps[1:] {
				sizes = append(sizes, len(r.Events))
				if r.Revision != 5001 {
					t.Fatalf("header revision %d, want 5001", r.Revision)
				}
				for _, ev := range r.Events {
					if ev.Kv.ModRevision != next {
						t.Fatalf("event at %d, want %d", ev.Kv.ModRevision, next)
					}
					next += 2
				}
			}
			if want := []int{1000, 1000, 500}; !slices.Equal(sizes, want) {
				t.Errorf("events per response %v, want %v", sizes, want)
			}
		})
	}
}

func TestWatchCompacted(t *testing.T) {
	e := newWatchEnv(t, HubOptions{RecentEvents: 1})
	for i := range 5 {
		e.put("a", fmt.Sprint(i)) // 2..6
	}
	e.compact(4)
	ws := e.h.NewStream()
	defer ws.Close()
	ws.Watch(WatchOptions{ID: 5, Key: []byte("a"), StartRev: 3})
	ws.Watch(WatchOptions{ID: 6, Key: []byte("a"), StartRev: 4, PrevKV: true})
	if ws.RequestProgressAll() {
		t.Error("progress while watchers are behind")
	}
	wantResps(t, drain(t, ws), `
id=5 rev=6 created
id=6 rev=6 created
id=5 rev=0 canceled compact=4
id=6 rev=6
  PUT "a"="2" c=2 m=4 v=3 l=0 prev -
  PUT "a"="3" c=2 m=5 v=4 l=0 prev "a"="2" c=2 m=4 v=3 l=0
  PUT "a"="4" c=2 m=6 v=5 l=0 prev "a"="3" c=2 m=5 v=4 l=0
`)
	// The compacted watcher keeps its id until canceled, and keeps the
	// stream from being in sync.
	if ws.RequestProgressAll() {
		t.Error("progress with a compacted watcher on the stream")
	}
	if _, err := ws.Watch(WatchOptions{ID: 5, Key: []byte("x")}); err != ErrWatcherDuplicateID {
		t.Errorf("reusing a compacted watcher's id: %v, want %v", err, ErrWatcherDuplicateID)
	}
	ws.Cancel(5)
	drain(t, ws)
	if !ws.RequestProgressAll() {
		t.Error("no progress once the compacted watcher is canceled")
	}
}

// TestWatchCompactedTombstone: compaction at a revision removes a tombstone
// written at it but keeps the change log there; a watcher starting at the
// compacted revision still sees the DELETE.
func TestWatchCompactedTombstone(t *testing.T) {
	e := newWatchEnv(t, HubOptions{RecentEvents: 1})
	e.put("a", "1") // 2
	e.del("a", "")  // 3
	e.put("b", "1") // 4
	e.compact(3)
	ws := e.h.NewStream()
	defer ws.Close()
	ws.Watch(WatchOptions{Key: []byte("a"), End: []byte("c"), StartRev: 3, PrevKV: true})
	wantResps(t, drain(t, ws), `
id=0 rev=4 created
id=0 rev=4
  DELETE "a"="" c=0 m=3 v=0 l=0 prev -
  PUT "b"="1" c=4 m=4 v=1 l=0 prev -
`)
}

func TestWatchFutureStart(t *testing.T) {
	e := newWatchEnv(t, HubOptions{})
	ws := e.h.NewStream()
	defer ws.Close()
	ws.Watch(WatchOptions{Key: []byte("a"), StartRev: 4})
	if ws.RequestProgressAll() {
		t.Error("progress for a watcher that starts in the future (etcd skips it)")
	}
	e.put("a", "1") // 2
	e.put("a", "2") // 3
	if ws.RequestProgressAll() {
		t.Error("progress for a watcher that starts in the future (etcd skips it)")
	}
	e.put("a", "3") // 4
	if !ws.RequestProgressAll() {
		t.Error("no progress once the start revision is reached")
	}
	wantResps(t, drain(t, ws), `
id=0 rev=1 created
id=0 rev=4
  PUT "a"="3" c=2 m=4 v=3 l=0 prev -
id=-1 rev=4
`)
}

// TestWatchPublishGap: revisions that never reached the hub (a bug
// elsewhere) are not lost: watchers in sync fall back to the change log.
func TestWatchPublishGap(t *testing.T) {
	e := newWatchEnv(t, HubOptions{})
	ws := e.h.NewStream()
	defer ws.Close()
	ws.Watch(WatchOptions{Key: []byte("a"), End: []byte("c")})
	drain(t, ws)
	b, err := e.s.NewBatch() // committed but never published: rev 2
	if err != nil {
		t.Fatal(err)
	}
	tx := b.Txn()
	tx.Put([]byte("a"), []byte("hidden"), 0)
	tx.End()
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	e.put("b", "1") // 3, published
	wantResps(t, drain(t, ws), `
id=0 rev=3
  PUT "a"="hidden" c=2 m=2 v=1 l=0 prev -
  PUT "b"="1" c=3 m=3 v=1 l=0 prev -
`)
	e.put("a", "2") // 4: live again
	wantResps(t, drain(t, ws), `
id=0 rev=4
  PUT "a"="2" c=2 m=4 v=2 l=0 prev -
`)
}

// TestWatchSlowStream fills a stream's queue: its watchers fall back to
// catching up, deliver every event exactly once in order, and rejoin the
// live fan-out; another stream is unaffected.
func TestWatchSlowStream(t *testing.T) {
	e := newWatchEnv(t, HubOptions{StreamQueue: 4})
	slow, fast := e.h.NewStream(), e.h.NewStream()
	defer slow.Close()
	defer fast.Close()
	for _, ws := range []*WatchStream{slow, fast} {
		ws.Watch(WatchOptions{Key: []byte("k"), End: []byte("l")})
		ws.Watch(WatchOptions{Key: []byte("k1")})
	}
	var fastGot []WatchResponse
	for i := range 50 {
		e.put(fmt.Sprintf("k%d", i%3), fmt.Sprint(i))
		got, _, _ := fast.Next(context.Background(), nil)
		fastGot = append(fastGot, got...)
	}
	if slow.RequestProgressAll() {
		t.Error("progress while the slow stream's watchers are behind")
	}
	slowGot := drain(t, slow)
	for name, got := range map[string][]WatchResponse{"slow": slowGot, "fast": fastGot} {
		next := map[int64]int64{0: 2, 1: 2}
		for _, r := range got {
			if r.Created {
				continue
			}
			for _, ev := range r.Events {
				rev := ev.Kv.ModRevision
				if rev < next[r.WatchID] {
					t.Fatalf("%s: watcher %d got rev %d after %d", name, r.WatchID, rev, next[r.WatchID]-1)
				}
				if r.WatchID == 0 && rev != next[0] {
					t.Fatalf("%s: watcher 0 missed revisions %d..%d", name, next[0], rev-1)
				}
				next[r.WatchID] = rev + 1
			}
		}
		if next[0] != 52 {
			t.Errorf("%s: watcher 0 ends at %d, want 52", name, next[0])
		}
		if want := int64(52); next[1] != want { // k1's last put, i=49, is at rev 51
			t.Errorf("%s: watcher 1 ends at %d, want %d", name, next[1], want)
		}
	}
	if len(slowGot) >= len(fastGot) {
		t.Errorf("slow stream got %d responses, fast %d: catching up should merge revisions", len(slowGot), len(fastGot))
	}
	if !slow.RequestProgressAll() {
		t.Error("no progress after catching up")
	}
	e.put("k2", "live")
	wantResps(t, drain(t, slow), `
id=-1 rev=51
id=0 rev=52
  PUT "k2"="live" c=4 m=52 v=17 l=0 prev -
`)
}

// TestWatchStreamQueueBytes: a stream whose client stops reading holds at
// most StreamQueueBytes of events however much is written; its watcher
// then catches up from history in responses of about mergeMaxBytes and
// gets every revision exactly once, in order.
func TestWatchStreamQueueBytes(t *testing.T) {
	const limit = 64 << 10
	e := newWatchEnv(t, HubOptions{StreamQueueBytes: limit, RecentBytes: 1 << 20})
	ws := e.h.NewStream()
	defer ws.Close()
	ws.Watch(WatchOptions{Key: []byte("k"), End: []byte("l"), PrevKV: true})
	drain(t, ws) // the created response
	val := strings.Repeat("v", 4<<10)
	const n = 400 // 1.6 MiB of values, twice that with prev_kv
	for i := range n {
		e.put(fmt.Sprintf("k%d", i%4), val)
		ws.mu.Lock()
		q := ws.qBytes
		ws.mu.Unlock()
		if q > limit+eventsBytes(nil)+2*(len(val)+64) { // one revision may go past the limit into an empty queue
			t.Fatalf("after %d puts %d bytes queued, limit %d", i+1, q, limit)
		}
	}
	if m := e.h.Metrics(); m.Overflows == 0 || m.Lagging != 1 {
		t.Fatalf("metrics %+v: the watcher should have overflowed and be catching up", m)
	}
	next := int64(2)
	for _, r := range drain(t, ws) {
		if size := eventsBytes(r.Events); size > mergeMaxBytes+2*(len(val)+64) {
			t.Errorf("a catch-up response of %d bytes", size)
		}
		for _, ev := range r.Events {
			if ev.Kv.ModRevision != next {
				t.Fatalf("got revision %d, want %d", ev.Kv.ModRevision, next)
			}
			if next > 5 && ev.PrevKv == nil {
				t.Fatalf("revision %d without prev_kv", next)
			}
			next++
		}
	}
	if next != n+2 {
		t.Fatalf("delivered through %d, want %d", next-1, n+1)
	}
}

// TestWatchProgressNeverAhead requests progress between publishes and
// checks that no notification ever claims a revision whose events come
// after it on the stream (kine #731, etcd #15220).
func TestWatchProgressNeverAhead(t *testing.T) {
	e := newWatchEnv(t, HubOptions{StreamQueue: 8})
	ws := e.h.NewStream()
	defer ws.Close()
	ws.Watch(WatchOptions{Key: []byte("a"), End: []byte("z")})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 300 {
			e.put(fmt.Sprintf("k%d", i%7), "v")
		}
	}()
	var got []WatchResponse
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		ws.RequestProgressAll()
		out, _, err := ws.Next(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, out...)
	}
	got = append(got, drain(t, ws)...)
	progressAt := int64(0)
	last := int64(0)
	for _, r := range got {
		if r.WatchID == ProgressWatchID {
			if r.Revision < last {
				t.Fatalf("progress %d after an event at %d", r.Revision, last)
			}
			progressAt = r.Revision
			continue
		}
		for _, ev := range r.Events {
			if ev.Kv.ModRevision <= progressAt {
				t.Fatalf("event at %d after progress %d", ev.Kv.ModRevision, progressAt)
			}
			if ev.Kv.ModRevision != last+1 && last != 0 {
				t.Fatalf("event at %d after %d", ev.Kv.ModRevision, last)
			}
			last = ev.Kv.ModRevision
		}
	}
	if last != 301 {
		t.Errorf("last event at %d, want 301", last)
	}
}

// TestHistoryMatchesLive checks that the change log reader gives exactly
// what the applier published, with and without PrevKv and key filters,
// before and after compaction.
func TestHistoryMatchesLive(t *testing.T) {
	e := newWatchEnv(t, HubOptions{})
	rng := rand.New(rand.NewPCG(7, 7))
	keys := []string{"a", "b", "c", "d", "e\x00f", "e"}
	key := func() []byte { return []byte(keys[rng.IntN(len(keys))]) }
	for range 400 {
		var txns []func(*WriteTxn)
		for range 1 + rng.IntN(3) {
			txns = append(txns, func(tx *WriteTxn) {
				switch rng.IntN(5) {
				case 0:
					k := key()
					end := append([]byte(nil), k...)
					end[0]++
					tx.DeleteRange(k, end)
				case 1:
					tx.DeleteRange(key(), nil)
				case 2: // several distinct keys
					used := map[string]bool{}
					for range 3 {
						k := key()
						if !used[string(k)] {
							used[string(k)] = true
							tx.Put(k, []byte(fmt.Sprint(rng.IntN(100))), int64(rng.IntN(3)))
						}
					}
				default:
					tx.Put(key(), []byte(fmt.Sprint(rng.IntN(100))), 0)
				}
			})
		}
		e.commit(txns...)
	}
	check := func(from int64, match func([]byte) bool, prev bool) {
		t.Helper()
		var want []string
		first := e.s.CompactRev()
		for _, re := range e.history {
			if re.Rev < from {
				continue
			}
			for i := range re.Events {
				ev := re.Events[i]
				if match != nil && !match(ev.Kv.Key) {
					continue
				}
				if re.Rev <= first {
					ev.PrevKv = nil
				}
				want = append(want, fmt.Sprintf("%d %s", re.Rev, fmtEvent(&ev, prev)))
			}
		}
		var got []string
		for next := from; next <= e.s.Rev(); {
			revs, n, err := e.s.History(context.Background(), HistoryRequest{From: next, To: e.s.Rev(), Match: match, MaxRevs: 17, MaxScan: 40, MaxBytes: 24, PrevKV: prev})
			if err != nil {
				t.Fatal(err)
			}
			if n <= next {
				t.Fatalf("History from %d made no progress", next)
			}
			for _, re := range revs {
				if re.Rev < next || re.Rev >= n {
					t.Fatalf("History from %d returned rev %d beyond %d", next, re.Rev, n)
				}
				for i := range re.Events {
					got = append(got, fmt.Sprintf("%d %s", re.Rev, fmtEvent(&re.Events[i], prev)))
				}
			}
			next = n
		}
		if d := diffLines(want, got); d != "" {
			t.Fatalf("from %d prev=%v: history differs from live:\n%s", from, prev, d)
		}
	}
	onlyAE := func(k []byte) bool { return bytes.HasPrefix(k, []byte("a")) || bytes.HasPrefix(k, []byte("e")) }
	for _, prev := range []bool{false, true} {
		check(1, nil, prev)
		check(150, onlyAE, prev)
	}
	e.compact(200)
	if _, _, err := e.s.History(context.Background(), HistoryRequest{From: 199, To: 300}); err != ErrCompacted {
		t.Fatalf("History below the compacted revision: %v, want %v", err, ErrCompacted)
	}
	for _, prev := range []bool{false, true} {
		check(200, nil, prev)
		check(321, onlyAE, prev)
	}
}

func diffLines(want, got []string) string {
	for i := 0; i < len(want) || i < len(got); i++ {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\n  want %s\n  got  %s", i, w, g)
		}
	}
	return ""
}

// TestWatchHammer runs a writer, compactions and many streams whose
// watchers come and go, some read slowly, some resume from the last
// revision they saw after being canceled. Every watcher must see exactly
// the committed history of its range from its start, in order, each
// revision whole, unless canceled for compaction (then up to it).
func TestWatchHammer(t *testing.T) {
	writes := 1000
	if testing.Short() {
		writes = 300
	}
	e := newWatchEnv(t, HubOptions{StreamQueue: 3, RecentEvents: 200, CatchUpScan: 50})
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	type spec struct {
		o     WatchOptions
		first int64 // first revision that may be delivered
	}
	type seen struct {
		spec
		revs      map[int64][]string // what was delivered, per revision
		log       []string
		last      int64
		compacted int64
		canceled  bool
	}
	var (
		wg   sync.WaitGroup
		stop = make(chan struct{})
		mu   sync.Mutex
		all  []*seen
	)
	// writer, with occasional compaction
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 1))
		for i := range writes {
			switch rng.IntN(10) {
			case 0:
				k := keys[rng.IntN(len(keys))]
				e.del(k, string(rune(k[0]+2)))
			case 1:
				e.commit(func(tx *WriteTxn) {
					tx.Put([]byte(keys[rng.IntN(4)]), []byte("t"), 0)
					tx.Put([]byte(keys[4+rng.IntN(4)]), []byte("t"), 0)
				})
			case 2, 3:
				// several revisions in one batch, as group commit makes them
				var txns []func(*WriteTxn)
				for j := range 1 + rng.IntN(6) {
					k := []byte(keys[rng.IntN(len(keys))])
					if j%3 == 2 {
						txns = append(txns, func(tx *WriteTxn) { tx.DeleteRange(k, nil) })
					} else {
						txns = append(txns, func(tx *WriteTxn) { tx.Put(k, []byte(fmt.Sprint(i, j)), 0) })
					}
				}
				e.commit(txns...)
			default:
				e.put(keys[rng.IntN(len(keys))], fmt.Sprint(i))
			}
			if i%200 == 199 {
				e.compact(e.s.Rev() - 50)
			}
		}
		close(stop)
	}()
	const streams = 6
	for sIdx := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(sIdx), 9))
			ws := e.h.NewStream()
			defer ws.Close()
			mine := map[int64]*seen{}
			create := func(o WatchOptions) {
				rev := e.h.Rev()
				id, err := ws.Watch(o)
				if err != nil {
					t.Error(err)
					return
				}
				first := o.StartRev
				if first == 0 {
					first = rev + 1 // at least; the created response says exactly
				}
				s := &seen{spec: spec{o: o, first: first}, revs: map[int64][]string{}}
				mine[id] = s
				mu.Lock()
				all = append(all, s)
				mu.Unlock()
			}
			newOpts := func() WatchOptions {
				o := WatchOptions{PrevKV: rng.IntN(2) == 0, NoDelete: rng.IntN(5) == 0}
				k := keys[rng.IntN(len(keys))]
				o.Key = []byte(k)
				switch rng.IntN(3) {
				case 0:
					o.End = []byte(string(rune(k[0] + 3)))
				case 1:
					o.End = []byte{}
				}
				if rng.IntN(2) == 0 {
					o.StartRev = max(1, e.s.Rev()-int64(rng.IntN(100)))
				}
				return o
			}
			for range 4 {
				create(newOpts())
			}
			slow := sIdx%2 == 0
			finishing := false
			for {
				select {
				case <-stop:
					finishing = true
				default:
				}
				out, more, err := ws.Next(context.Background(), nil)
				if err != nil {
					t.Error(err)
					return
				}
				for _, r := range out {
					s := mine[r.WatchID]
					if s == nil {
						continue
					}
					s.log = append(s.log, fmtResp(r))
					if r.Created {
						if s.o.StartRev == 0 {
							s.first = r.Revision + 1
						}
						continue
					}
					if r.CompactRevision != 0 {
						s.compacted = r.CompactRevision
						if r.CompactRevision <= s.last {
							t.Errorf("watcher %d: compacted at %d after seeing %d", r.WatchID, r.CompactRevision, s.last)
						}
						// resume from the compacted revision, as a client does
						ws.Cancel(r.WatchID)
						delete(mine, r.WatchID)
						o := s.o
						o.StartRev = r.CompactRevision
						create(o)
						continue
					}
					prevRev := int64(0)
					for _, ev := range r.Events {
						rev := ev.Kv.ModRevision
						if rev < prevRev {
							t.Errorf("events out of order in one response")
						}
						if rev != prevRev && s.revs[rev] != nil {
							t.Errorf("watcher %d: revision %d delivered twice\n%s", r.WatchID, rev, strings.Join(s.log, "\n"))
						}
						prevRev = rev
						s.revs[rev] = append(s.revs[rev], fmtEvent(ev, s.o.PrevKV))
						if rev < s.last {
							t.Errorf("watcher %d: rev %d after %d", r.WatchID, rev, s.last)
						}
						s.last = rev
					}
				}
				if finishing && !more && len(out) == 0 && e.h.Rev() == e.s.Rev() {
					return
				}
				if slow {
					time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
				}
				if !finishing && rng.IntN(60) == 0 {
					// a new watcher from a random recent revision, often
					// below the compacted one
					o := newOpts()
					o.StartRev = max(1, e.s.Rev()-int64(rng.IntN(200)))
					create(o)
				}
				if !finishing && rng.IntN(40) == 0 {
					// cancel one watcher and resume it from where it was
					for id, s := range mine {
						if s.compacted != 0 {
							continue
						}
						ws.Cancel(id)
						s.canceled = true
						delete(mine, id)
						o := s.o
						o.StartRev = max(s.last+1, s.first)
						create(o)
						break
					}
				}
				if len(out) == 0 && !more {
					select {
					case <-ws.Ready():
					case <-time.After(time.Millisecond):
					}
				}
			}
		}()
	}
	wg.Wait()
	m := e.h.Metrics()
	t.Logf("hub metrics: %+v", m)
	if m.Overflows == 0 || m.ReadsMemory == 0 || m.ReadsStore == 0 || m.Compacted == 0 {
		t.Errorf("the hammer did not exercise overflow, catch-up from memory and Pebble, and compaction: %+v", m)
	}
	byRev := map[int64][]mvccpb.Event{}
	for _, re := range e.history {
		byRev[re.Rev] = re.Events
	}
	final := e.s.Rev()
	compactRev := e.s.CompactRev()
	stripPrev := func(lines []string) []string {
		out := make([]string, len(lines))
		for j, l := range lines {
			out[j], _, _ = strings.Cut(l, " prev ")
		}
		return out
	}
	for i, s := range all {
		end := final
		switch {
		case s.compacted != 0 || s.canceled:
			// Canceled (by the client, or for compaction: then it may have
			// been behind) anywhere after the last event it saw.
			end = s.last
		}
		for rev := s.first; rev <= end; rev++ {
			var want []string
			for j := range byRev[rev] {
				ev := &byRev[rev][j]
				k := ev.Kv.Key
				in := bytes.Equal(k, s.o.Key)
				if s.o.End != nil {
					in = bytes.Compare(k, s.o.Key) >= 0 && (len(s.o.End) == 0 || bytes.Compare(k, s.o.End) < 0)
				}
				if in && !(s.o.NoDelete && ev.Type == mvccpb.DELETE) {
					want = append(want, fmtEvent(ev, s.o.PrevKV))
				}
			}
			got := s.revs[rev]
			if rev <= compactRev {
				// the previous version of a change at or below the
				// compacted revision may or may not still be there
				want, got = stripPrev(want), stripPrev(got)
			}
			if d := diffLines(want, got); d != "" {
				t.Fatalf("watcher %d (%+v, first %d) at rev %d:\n%s\nresponses:\n%s", i, s.o, s.first, rev, d, strings.Join(s.log, "\n"))
			}
		}
	}
}
