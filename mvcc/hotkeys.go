package mvcc

import (
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// A one-key read of a key that sits in Pebble's tables seeks every level
// of a pooled iterator: after many writes that was a quarter of a
// serializable Get's server CPU. hotKeys answers reads of keys read often
// from memory instead, exactly: an entry is a key's newest live version as
// of a revision, and every write of the key removes it before the write's
// revision is published.
//
// Why a hit is exact. An entry (kv, at) says: at revision at, kv is the
// key's newest version. A batch writing the key at revision w first
// removes the entry and raises written to w (under mu), then commits, then
// publishes w. A view reading at R ≥ at found the entry, so it was not
// removed; had the key been written at some w in (at, R], that write's
// removal preceded w's publication and so the view's revision load, hence
// this lookup: the entry was either removed then or, added after, refused
// (written ≥ w > at). So the key is unchanged in (at, R]. A read at R < at
// may use the entry when kv's revision is at or below R (nothing newer came
// before at). Compaction never removes a version that is the newest at or
// below a readable revision, and a deleted key's entry goes with the
// tombstone's write, so compaction leaves entries alone.
//
// Replacing the store's contents (Replace, Import: revisions may go back)
// disables the set (gen advances, nothing is added) until the new state is
// published, then starts a new generation; a view uses and adds only
// entries of the generation it was created in (loaded before its revision).
//
// Keys enter on their second miss within a short window (seen), so a scan
// of many different keys does not churn the set; it is bounded in entries
// and in the size of what each holds.
type hotKeys struct {
	seed    maphash.Seed // recentKeys' seed: a put's hash serves both
	mu      sync.RWMutex
	m       map[uint64]*hotEntry
	written int64 // newest revision a write removed entries for; MaxInt64 while disabled
	gen     atomic.Uint64
	seen    [hotSeenSlots]atomic.Uint64 // admission: a key hash missed once recently
	hits    atomic.Int64                // reads answered here (tests)
}

type hotEntry struct {
	kv  mvccpb.KeyValue // owns its memory; never modified
	at  int64
	gen uint64
}

const (
	// hotKeysMax bounds the entries; past it an arbitrary one makes room.
	hotKeysMax = 1024
	// hotValueMax bounds a cached key plus value: with hotKeysMax, the set
	// holds at most ~4 MiB.
	hotValueMax  = 4 << 10
	hotSeenSlots = 1024
)

func (h *hotKeys) hash(key []byte) uint64 { return maphash.Bytes(h.seed, key) }

// enable starts a new generation that holds versions from revision rev on.
func (h *hotKeys) enable(rev int64) {
	h.mu.Lock()
	clear(h.m)
	if h.m == nil {
		h.m = make(map[uint64]*hotEntry)
	}
	h.written = rev
	h.gen.Add(1)
	h.mu.Unlock()
}

// disable drops every entry and refuses new ones until enable.
func (h *hotKeys) disable() {
	h.mu.Lock()
	clear(h.m)
	h.written = math.MaxInt64
	h.gen.Add(1)
	h.mu.Unlock()
}

// invalidate removes the entries of the keys of hashes hs, written at
// revisions up to rev. The writer calls it before rev is published.
func (h *hotKeys) invalidate(hs []uint64, rev int64) {
	h.mu.Lock()
	if rev > h.written {
		h.written = rev
	}
	if len(h.m) > 0 {
		for _, x := range hs {
			delete(h.m, x)
		}
	}
	h.mu.Unlock()
}

// get returns the newest version at or below rev of the key of hash x, for
// a view of generation gen; ok is false if the set cannot tell.
func (h *hotKeys) get(x uint64, key []byte, rev int64, gen uint64) (mvccpb.KeyValue, bool) {
	h.mu.RLock()
	e := h.m[x]
	h.mu.RUnlock()
	if e == nil || e.gen != gen || string(e.kv.Key) != string(key) {
		return mvccpb.KeyValue{}, false
	}
	if rev < e.at && e.kv.ModRevision > rev {
		return mvccpb.KeyValue{}, false
	}
	h.hits.Add(1)
	return e.kv, true
}

// admit reports whether a missed key of hash x should be added: it was
// missed once before, recently.
func (h *hotKeys) admit(x uint64) bool {
	s := &h.seen[x%hotSeenSlots]
	if s.Load() == x {
		return true
	}
	s.Store(x)
	return false
}

// add records kv as the newest version of its key (hash x) at revision at,
// read by a view of generation gen. It refuses it if a write above at
// happened since (it may have written the key) or the generation moved on.
func (h *hotKeys) add(x uint64, kv *mvccpb.KeyValue, at int64, gen uint64) {
	if len(kv.Key)+len(kv.Value) > hotValueMax {
		return
	}
	buf := make([]byte, 0, len(kv.Key)+len(kv.Value))
	buf = append(buf, kv.Key...)
	n := len(buf)
	e := &hotEntry{kv: *kv, at: at, gen: gen}
	e.kv.Key = buf[:n:n]
	e.kv.Value = nil
	if len(kv.Value) > 0 {
		e.kv.Value = append(buf, kv.Value...)[n:]
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.written > at || h.gen.Load() != gen {
		return
	}
	if _, ok := h.m[x]; !ok && len(h.m) >= hotKeysMax {
		for k := range h.m {
			delete(h.m, k)
			break
		}
	}
	h.m[x] = e
}
