package mvcc

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Errors a watch creation is refused with. Their texts are etcd's: clients
// see them as the cancel reason.
var (
	ErrWatcherRangeEmpty  = errors.New("mvcc: watcher range is empty")
	ErrWatcherDuplicateID = errors.New("mvcc: duplicate watch ID provided on the WatchStream")
)

// AutoWatchID asks the stream to choose the watch id (etcd's AutoWatchID).
const AutoWatchID int64 = 0

// ProgressWatchID is the watch id of a progress notification that speaks for
// every watcher of a stream (etcd's InvalidWatchID).
const ProgressWatchID int64 = -1

// catchUpMaxRevs is the most revisions one response to a watcher that is
// catching up carries (etcd's watchBatchMaxRevs). A variable for tests.
var catchUpMaxRevs = 1000

// catchUpMaxBytes bounds the event bytes one catch-up step reads (at a
// revision boundary; one revision is always read whole), so a stream
// catching up through large values holds a few MiB at a time rather than
// up to catchUpMaxRevs revisions of them. A variable for tests.
var catchUpMaxBytes = 4 << 20

// HubOptions tune a Hub. Zero values mean the defaults.
type HubOptions struct {
	// RecentEvents and RecentBytes bound the newest events the hub keeps in
	// memory so that watchers a little behind catch up without reading
	// Pebble. Defaults 16384 events and 16 MiB: each event costs ~250-500 B
	// of live heap beyond its key and value, and 65,536 of them were the
	// largest item in the memory left after a bulk load (RATIONALE.md,
	// "A 16,384-event recent window").
	RecentEvents int
	RecentBytes  int64
	// StreamQueue is how many responses may wait for one stream's sender.
	// When a watcher's next response does not fit, the watcher stops
	// receiving live events and catches up from history once the sender
	// has drained the queue. Default 1024.
	StreamQueue int
	// StreamQueueBytes bounds the event bytes (as eventBytes estimates
	// them) waiting for one stream's sender, with the same fallback: a
	// client that stops reading holds at most this much in its queue,
	// however much is written, and catches up from the change log when it
	// reads again. A response is always queued when the queue is empty,
	// however large. Default 16 MiB.
	StreamQueueBytes int
	// CatchUpScan bounds the change-log entries one catch-up step reads
	// from Pebble. Default 16384.
	CatchUpScan int
	// ResponseMaxBytes is about the most event bytes (as eventBytes
	// estimates them) a response to a watcher without fragment holds past
	// its first revision, live or catching up; one revision always goes
	// whole. A server with a send limit sets it below that limit. Default
	// 1 MiB.
	ResponseMaxBytes int
}

func (o *HubOptions) ensureDefaults() {
	if o.RecentEvents <= 0 {
		o.RecentEvents = 1 << 14
	}
	if o.RecentBytes <= 0 {
		o.RecentBytes = 16 << 20
	}
	if o.StreamQueue <= 0 {
		o.StreamQueue = 1024
	}
	if o.StreamQueueBytes <= 0 {
		o.StreamQueueBytes = 16 << 20
	}
	if o.CatchUpScan <= 0 {
		o.CatchUpScan = 16384
	}
	if o.ResponseMaxBytes <= 0 {
		o.ResponseMaxBytes = mergeMaxBytes
	}
}

// WatchResponse is one message of a watch stream. Responses of one stream
// come out of Next in the order they must be sent.
type WatchResponse struct {
	// WatchID is the watcher's id, or ProgressWatchID for a progress
	// notification on behalf of the whole stream, or -1 for a refused
	// creation.
	WatchID int64
	// Events are the watcher's events, oldest first; one revision's events
	// are never split across responses. The slice and the events may be
	// shared with other responses and must not be modified.
	Events []*mvccpb.Event
	// Revision is the revision for the response header.
	Revision int64
	// CompactRevision is set when the watcher was canceled because the
	// revision it needed has been compacted.
	CompactRevision int64
	// Created and Canceled mark control responses; CancelReason says why a
	// creation was refused.
	Created, Canceled bool
	CancelReason      string
	// Tag is the watcher's WatchOptions.Tag (nil on responses for the
	// whole stream and on refusals).
	Tag any
}

// WatchOptions describe a watcher.
type WatchOptions struct {
	// ID is the client-chosen watch id; AutoWatchID lets the stream choose.
	ID int64
	// Key and End are the watched range in the mvcc convention: End nil is
	// the single key, an empty non-nil End every key >= Key.
	Key, End []byte
	// StartRev is the first revision to deliver; 0 means after the current
	// one. The caller rejects negative revisions.
	StartRev int64
	// PrevKV asks for each event's previous key-value.
	PrevKV bool
	// NoPut and NoDelete drop PUT and DELETE events.
	NoPut, NoDelete bool
	// Fragment says the caller splits large responses into fragments
	// that the client merges (etcd's fragment option): a watcher catching
	// up then gets up to catchUpMaxRevs revisions per response, as etcd's,
	// bounded by fragmentMaxBytes rather than mergeMaxBytes.
	Fragment bool
	// Tag is the caller's own value, returned with the watcher's responses.
	Tag any
}

// Hub fans the events of committed revisions out to watchers. The applier
// publishes each durable batch; every watcher that is in sync gets its
// events queued on its stream right away, without blocking. A watcher that
// starts in the past, or whose stream's queue is full, catches up from the
// change log (in memory for recent revisions, else Pebble) in its stream's
// own sender goroutine, and rejoins the live fan-out once it reaches the
// newest revision. So a slow stream costs the applier and the other streams
// nothing, and no event is ever dropped.
//
// The hub owns no goroutine.
type Hub struct {
	s    *Store
	opts HubOptions

	mu     sync.Mutex
	rev    int64 // newest revision published to watchers
	synced watcherIndex
	gen    uint64 // dispatch generation, to collect each watcher's hits once
	// scratch for Publish and dispatch, reused under mu
	recs    []*recentRev
	touched []*watcher
	groups  []*watcherGroup
	collect func(*watcherGroup)

	recentMu sync.RWMutex
	recent   recentLog

	stats hubStats
}

// hubStats are the hub's counters, read by Metrics.
type hubStats struct {
	streams, watchers, lagging  atomic.Int64
	overflows, compacted        atomic.Int64
	readsMemory, readsStore     atomic.Int64
	eventsQueued, responsesSent atomic.Int64
	eventsSent                  atomic.Int64
	eventsPending               atomic.Int64 // events in streams' queues
}

// HubMetrics describe a hub's watchers and work so far.
type HubMetrics struct {
	// Streams and Watchers are open now; Lagging of the watchers are
	// catching up rather than in the live fan-out.
	Streams, Watchers, Lagging int64
	// Overflows counts watchers that fell behind because their stream's
	// queue was full; Compacted those canceled because the revision they
	// needed was compacted.
	Overflows, Compacted int64
	// ReadsMemory and ReadsStore count catch-up reads served from the
	// recent revisions in memory and from the change log in Pebble.
	ReadsMemory, ReadsStore int64
	// Responses and EventsSent count the responses and events handed to
	// senders; EventsQueued the events the live fan-out queued.
	Responses, EventsSent, EventsQueued int64
	// EventsPending is the events waiting in streams' queues for their
	// senders (etcd's pending events: handed to a watcher, not yet sent).
	EventsPending int64
}

// Metrics returns the hub's current metrics.
func (h *Hub) Metrics() HubMetrics {
	st := &h.stats
	return HubMetrics{
		Streams: st.streams.Load(), Watchers: st.watchers.Load(), Lagging: st.lagging.Load(),
		Overflows: st.overflows.Load(), Compacted: st.compacted.Load(),
		ReadsMemory: st.readsMemory.Load(), ReadsStore: st.readsStore.Load(),
		Responses: st.responsesSent.Load(), EventsSent: st.eventsSent.Load(), EventsQueued: st.eventsQueued.Load(),
		EventsPending: st.eventsPending.Load(),
	}
}

// NewHub returns a hub for s, starting at its current revision. Every later
// batch must be handed to Publish, in order.
func NewHub(s *Store, opts HubOptions) *Hub {
	opts.ensureDefaults()
	h := &Hub{s: s, opts: opts, rev: s.Rev()}
	h.synced.init()
	h.recent.first = h.rev + 1
	h.collect = func(g *watcherGroup) { h.groups = append(h.groups, g) }
	return h
}

// Rev returns the newest revision whose events have been handed to every
// watcher in sync.
func (h *Hub) Rev() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rev
}

// Publish hands the hub the events of a durable batch, oldest revision
// first. It queues every in-sync watcher's events without waiting for any
// client; its cost follows the number of matching watchers.
func (h *Hub) Publish(revs []RevisionEvents) {
	if len(revs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	recs := h.recs[:0]
	for i := range revs {
		re := &revs[i]
		if re.Rev <= h.rev {
			continue // already published
		}
		if re.Rev != h.rev+1 {
			h.dispatch(recs)
			recs = recs[:0]
			h.resyncAll(re.Rev)
		}
		recs = append(recs, h.remember(re))
		h.rev = re.Rev
	}
	h.dispatch(recs)
	clear(recs)
	h.recs = recs[:0]
}

// resyncAll handles revisions that never reached the hub (nothing in the
// server skips Publish; this keeps a bug from silently losing events): every
// in-sync watcher falls back to catching up from the change log.
func (h *Hub) resyncAll(next int64) {
	var all []*watcher
	h.synced.each(func(w *watcher) { all = append(all, w) })
	for _, w := range all {
		h.unsync(w, max(w.next, h.rev+1))
	}
	h.recentMu.Lock()
	h.recent.reset(next)
	h.recentMu.Unlock()
}

// hit is one event of a published batch: recs[r].full[i].
type hit struct{ r, i int32 }

// dispatch queues the events of a batch of consecutive revisions for every
// in-sync watcher they match: one response per watcher for the whole batch
// (the applier commits many revisions at once under load), so that a busy
// server sends fewer, larger responses. One revision's events always stay
// together.
func (h *Hub) dispatch(recs []*recentRev) {
	if len(recs) == 0 || h.synced.len() == 0 {
		return
	}
	h.gen++
	touched := h.touched[:0]
	total := 0
	for ri, rec := range recs {
		total += len(rec.full)
		for i, ev := range rec.full {
			h.groups = h.groups[:0]
			if g := h.synced.keys[string(ev.Kv.Key)]; g != nil {
				h.groups = append(h.groups, g)
			}
			h.synced.ranges.Stab(ev.Kv.Key, h.collect)
			for _, g := range h.groups {
				for _, w := range g.ws {
					if w.next > rec.rev {
						continue // starts at a later revision
					}
					if w.mark != h.gen {
						w.mark = h.gen
						w.hits = w.hits[:0]
						touched = append(touched, w)
					}
					w.hits = append(w.hits, hit{int32(ri), int32(i)})
				}
			}
		}
	}
	end := recs[len(recs)-1].rev
	var (
		all      [2][]*mvccpb.Event // every event of the batch, bare and full
		allBytes [2]int
	)
	for _, rec := range recs {
		allBytes[0] += rec.bareBytes
		allBytes[1] += rec.fullBytes
	}
	for ti, w := range touched {
		touched[ti] = nil
		v := 0
		if w.prevKV {
			v = 1
			if prevOmitted(recs, w.hits) {
				// The watcher came after the put left PrevKv out:
				// history reads it from Pebble.
				h.unsync(w, recs[w.hits[0].r].rev)
				continue
			}
		}
		whole := len(w.hits) == total && !w.noPut && !w.noDelete
		if whole && len(recs) <= catchUpMaxRevs && (len(recs) == 1 || allBytes[v] <= h.opts.ResponseMaxBytes) {
			// Every event of the batch: share one slice among such watchers.
			if len(recs) == 1 {
				all[v] = recs[0].bare
				if v == 1 {
					all[v] = recs[0].full
				}
			} else if all[v] == nil {
				all[v] = make([]*mvccpb.Event, 0, total)
				for _, rec := range recs {
					if v == 1 {
						all[v] = append(all[v], rec.full...)
					} else {
						all[v] = append(all[v], rec.bare...)
					}
				}
			}
			h.deliver(w, all[v], end, len(recs), allBytes[v], recs[w.hits[0].r].rev, end)
			continue
		}
		var (
			evs      []*mvccpb.Event
			revs     int
			bytes    int
			last     int64
			firstRev int64
		)
		for _, ht := range w.hits {
			rec := recs[ht.r]
			ev := rec.bare[ht.i]
			if w.prevKV {
				ev = rec.full[ht.i]
			}
			if w.filtered(ev) {
				continue
			}
			if rec.rev != last {
				next := rec.bareBytes // at most this much joins for rec
				if w.prevKV {
					next = rec.fullBytes
				}
				if revs > 0 && (revs == catchUpMaxRevs || bytes+next > h.opts.ResponseMaxBytes) {
					if !h.deliver(w, evs, last, revs, bytes, firstRev, last) {
						break
					}
					evs, revs, bytes = nil, 0, 0
				}
				if revs == 0 {
					firstRev = rec.rev
				}
				revs++
				last = rec.rev
			}
			evs = append(evs, ev)
			bytes += eventBytes(ev)
		}
		if w.state != watcherSynced {
			continue // fell behind on the way
		}
		if len(evs) == 0 {
			w.next = end + 1
			continue
		}
		h.deliver(w, evs, last, revs, bytes, firstRev, end)
	}
	h.touched = touched[:0]
}

// prevOmitted reports whether a watcher's hits include a revision whose
// puts left PrevKv out.
func prevOmitted(recs []*recentRev, hits []hit) bool {
	for _, ht := range hits {
		if recs[ht.r].prevOmitted {
			return true
		}
	}
	return false
}

// deliver queues an in-sync watcher's events of revisions [first, last]
// (revs of them, about bytes bytes) and moves it past end; if its stream's queue is full, the
// watcher falls back to catching up from first.
func (h *Hub) deliver(w *watcher, evs []*mvccpb.Event, last int64, revs, bytes int, first, end int64) bool {
	if w.stream.pushEvents(w, evs, last, revs, bytes) {
		w.next = end + 1
		h.stats.eventsQueued.Add(int64(len(evs)))
		return true
	}
	h.stats.overflows.Add(1)
	h.unsync(w, first)
	return false
}

// unsync takes an in-sync watcher out of the live fan-out; its stream
// catches it up from next.
func (h *Hub) unsync(w *watcher, next int64) {
	h.synced.remove(w)
	w.state = watcherUnsynced
	w.next = next
	w.stream.addLagging(w)
}

// remember appends a revision to the in-memory recent log.
func (h *Hub) remember(re *RevisionEvents) *recentRev {
	n := len(re.Events)
	rec := &recentRev{revEvents: revEvents{rev: re.Rev}, prevOmitted: re.prevOmitted}
	// The two views' pointers in one allocation, in the record itself for
	// the usual one-event revision (a put): one allocation per revision
	// instead of three. Both capped: sends append to them.
	ptrs := rec.one[:]
	if n > 1 {
		ptrs = make([]*mvccpb.Event, 2*n)
	}
	rec.full, rec.bare = ptrs[:n:n], ptrs[n:2*n:2*n]
	var bare []mvccpb.Event
	for i := range re.Events {
		ev := &re.Events[i]
		rec.full[i], rec.bare[i] = ev, ev
		rec.bytes += 64 + int64(len(ev.Kv.Key)+len(ev.Kv.Value))
		rec.fullBytes += eventBytes(ev)
		rec.bareBytes += 16 + len(ev.Kv.Key) + len(ev.Kv.Value)
		if ev.PrevKv != nil {
			if bare == nil {
				bare = make([]mvccpb.Event, n)
			}
			bare[i] = mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
			rec.bare[i] = &bare[i]
			rec.bytes += 64 + int64(len(ev.PrevKv.Key)+len(ev.PrevKv.Value))
		}
	}
	h.recentMu.Lock()
	h.recent.add(rec, h.opts.RecentEvents, h.opts.RecentBytes)
	h.recentMu.Unlock()
	return rec
}

// read returns committed revisions [from, to] with at least one event that
// match accepts, at most catchUpMaxRevs of them, and the first revision not
// covered. Recent revisions come from memory, whole (callers filter per
// watcher); older ones from the change log in Pebble.
func (h *Hub) read(ctx context.Context, from, to int64, match func([]byte) bool, prevKV bool) ([]revEvents, int64, error) {
	h.recentMu.RLock()
	first := h.recent.first
	if from >= first {
		var out []revEvents
		scanned, size := 0, 0
		r := from
		omitted := false
		for ; r <= to && len(out) < catchUpMaxRevs && scanned < h.opts.CatchUpScan && size < catchUpMaxBytes; r++ {
			rec := h.recent.at(r)
			if rec == nil {
				break
			}
			scanned += len(rec.full)
			for _, ev := range rec.full {
				if match(ev.Kv.Key) {
					if prevKV && rec.prevOmitted {
						omitted = true // from Pebble, which has the previous values
						break
					}
					out = append(out, rec.revEvents)
					if prevKV {
						size += rec.fullBytes
					} else {
						size += rec.bareBytes
					}
					break
				}
			}
			if omitted {
				break
			}
		}
		if !omitted || r > from {
			h.recentMu.RUnlock()
			h.stats.readsMemory.Add(1)
			return out, r, nil
		}
		first = to + 1
	}
	h.recentMu.RUnlock()
	h.stats.readsStore.Add(1)
	revs, next, err := h.s.History(ctx, HistoryRequest{
		From: from, To: min(to, first-1), Match: match,
		MaxRevs: catchUpMaxRevs, MaxScan: h.opts.CatchUpScan, MaxBytes: catchUpMaxBytes, PrevKV: prevKV,
	})
	if err != nil {
		return nil, next, err
	}
	out := make([]revEvents, len(revs))
	for i := range revs {
		out[i] = sharedEvents(revs[i].Rev, revs[i].Events)
	}
	return out, next, nil
}

// sharedEvents makes the full and bare views of one revision's events.
func sharedEvents(rev int64, evs []mvccpb.Event) revEvents {
	n := len(evs)
	ptrs := make([]*mvccpb.Event, 2*n) // both views, capped: sends append
	re := revEvents{rev: rev, full: ptrs[:n:n], bare: ptrs[n : 2*n : 2*n]}
	var bare []mvccpb.Event
	for i := range evs {
		ev := &evs[i]
		re.full[i], re.bare[i] = ev, ev
		if ev.PrevKv != nil {
			if bare == nil {
				bare = make([]mvccpb.Event, len(evs))
			}
			bare[i] = mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
			re.bare[i] = &bare[i]
		}
	}
	return re
}

// revEvents is one revision's events as responses share them: with PrevKv
// (full) and without (bare).
type revEvents struct {
	rev        int64
	full, bare []*mvccpb.Event
}

// recentRev is one revision in the recent log.
type recentRev struct {
	revEvents
	one   [2]*mvccpb.Event // full and bare of a one-event revision
	bytes int64
	// sizes of the bare and full events, as eventsBytes counts them
	bareBytes, fullBytes int
	prevOmitted          bool // RevisionEvents.prevOmitted
}

// recentLog is a window of consecutive revisions, oldest first.
type recentLog struct {
	revs   []*recentRev
	head   int   // index of the oldest kept entry in revs
	first  int64 // revision of revs[head], or the next revision if empty
	events int
	bytes  int64
}

func (l *recentLog) add(rec *recentRev, maxEvents int, maxBytes int64) {
	if l.head == len(l.revs) {
		l.first = rec.rev
	}
	l.revs = append(l.revs, rec)
	l.events += len(rec.full)
	l.bytes += rec.bytes
	// Keep at least the newest revision, however large.
	for len(l.revs)-l.head > 1 && (l.events > maxEvents || l.bytes > maxBytes) {
		old := l.revs[l.head]
		l.revs[l.head] = nil
		l.head++
		l.first++
		l.events -= len(old.full)
		l.bytes -= old.bytes
	}
	if l.head > 64 && l.head*2 >= len(l.revs) {
		n := copy(l.revs, l.revs[l.head:])
		clear(l.revs[n:])
		l.revs = l.revs[:n]
		l.head = 0
	}
}

func (l *recentLog) at(rev int64) *recentRev {
	i := l.head + int(rev-l.first)
	if rev < l.first || i >= len(l.revs) {
		return nil
	}
	return l.revs[i]
}

func (l *recentLog) reset(next int64) {
	clear(l.revs)
	*l = recentLog{first: next}
}
