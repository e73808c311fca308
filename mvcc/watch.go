package mvcc

import (
	"bytes"
	"context"
	"errors"
	"math"
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
	// Pebble. Defaults 65536 events and 64 MiB.
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
		o.RecentEvents = 1 << 16
	}
	if o.RecentBytes <= 0 {
		o.RecentBytes = 64 << 20
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
	rec := &recentRev{revEvents: revEvents{rev: re.Rev, full: make([]*mvccpb.Event, n), bare: make([]*mvccpb.Event, n)}}
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
		for ; r <= to && len(out) < catchUpMaxRevs && scanned < h.opts.CatchUpScan && size < catchUpMaxBytes; r++ {
			rec := h.recent.at(r)
			if rec == nil {
				break
			}
			scanned += len(rec.full)
			for _, ev := range rec.full {
				if match(ev.Kv.Key) {
					out = append(out, rec.revEvents)
					if prevKV {
						size += rec.fullBytes
					} else {
						size += rec.bareBytes
					}
					break
				}
			}
		}
		h.recentMu.RUnlock()
		h.stats.readsMemory.Add(1)
		return out, r, nil
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
	re := revEvents{rev: rev, full: make([]*mvccpb.Event, len(evs)), bare: make([]*mvccpb.Event, len(evs))}
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
	bytes int64
	// sizes of the bare and full events, as eventsBytes counts them
	bareBytes, fullBytes int
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

type watcherState uint8

const (
	watcherSynced    watcherState = iota // in the hub's live fan-out
	watcherUnsynced                      // caught up by its stream from history
	watcherCompacted                     // canceled for compaction; the id stays taken until canceled
	watcherGone                          // canceled or its stream closed
)

// watcher is one watch. Fields are guarded by the hub's mu, except that
// while a watcher is unsynced only its stream's sender changes next.
type watcher struct {
	id       int64
	key, end []byte
	stream   *WatchStream
	startRev int64
	next     int64 // first revision not yet delivered (in sync: not yet published)
	state    watcherState

	prevKV, noPut, noDelete, fragment bool
	tag                               any

	// membership in the hub's index of in-sync watchers
	group *watcherGroup
	slot  int
	// membership in the stream's list of watchers catching up
	lagSlot int
	// dispatch scratch
	mark uint64
	hits []hit
	// events collected while catching up, not yet sent: pendingRevs
	// revisions, the newest pendingLast
	pending      []*mvccpb.Event
	pendingRevs  int
	pendingLast  int64
	pendingBytes int
	// the watcher's newest event response in its stream's queue (an
	// absolute position), which later revisions may join while the sender
	// has not taken it
	qPos  int64
	qRevs int
}

func (w *watcher) filtered(ev *mvccpb.Event) bool {
	return (w.noPut && ev.Type == mvccpb.PUT) || (w.noDelete && ev.Type == mvccpb.DELETE)
}

// synced reports whether w may be vouched for by a progress notification
// at the hub's revision: in the live fan-out and not waiting for a future
// start revision (etcd skips those too).
func (w *watcher) synced(rev int64) bool {
	return w.state == watcherSynced && w.startRev <= rev
}

// WatchStream is a set of watchers sharing one ordered response queue (one
// gRPC Watch stream). Watch, Cancel and the progress requests may be called
// from one goroutine while another, the sender, calls Ready and Next.
type WatchStream struct {
	h *Hub

	// guarded by h.mu
	watchers map[int64]*watcher
	nextID   int64
	lagging  []*watcher
	closed   bool

	// lagN mirrors len(lagging) for the sender's lock-free fast path.
	lagN atomic.Int32

	// The queue: responses waiting for the sender, queue[head:]. Positions
	// are absolute (base is the position of queue[0]) so that a watcher can
	// find its waiting response.
	mu    sync.Mutex
	queue []queued
	head  int
	base  int64
	// qBytes is the event bytes of queue[head:], qEvents its events.
	qBytes, qEvents int
	// barrier is the position of the newest queued response that is not an
	// event response: events may not join a response before it, or a
	// progress notification would overtake them.
	barrier int64
	ready   chan struct{}
	// pushes counts the event deliveries queued (merged or not): the
	// stream's demand, which the sender uses to decide to batch.
	pushes atomic.Uint64

	// sender-owned
	batch        []catchUpEntry
	sinceCatchUp int
}

// NewStream opens a watch stream. Close it when done.
func (h *Hub) NewStream() *WatchStream {
	h.stats.streams.Add(1)
	return &WatchStream{h: h, watchers: make(map[int64]*watcher), ready: make(chan struct{}, 1), barrier: -1}
}

// Watch creates a watcher and queues its created response (or, if refused,
// a created-and-canceled response with watch id -1 and the reason). It
// returns the watch id or the refusal.
func (ws *WatchStream) Watch(o WatchOptions) (int64, error) {
	h := ws.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if ws.closed {
		return -1, ErrWatcherRangeEmpty // as etcd; the stream is going away
	}
	if len(o.End) > 0 && bytes.Compare(o.Key, o.End) >= 0 {
		ws.rejectLocked(ErrWatcherRangeEmpty.Error())
		return -1, ErrWatcherRangeEmpty
	}
	id := o.ID
	if id == AutoWatchID {
		for ws.watchers[ws.nextID] != nil {
			ws.nextID++
		}
		id = ws.nextID
		ws.nextID++
	} else if ws.watchers[id] != nil {
		ws.rejectLocked(ErrWatcherDuplicateID.Error())
		return -1, ErrWatcherDuplicateID
	}
	w := &watcher{
		id: id, key: o.Key, end: o.End, stream: ws, startRev: o.StartRev,
		prevKV: o.PrevKV, noPut: o.NoPut, noDelete: o.NoDelete, fragment: o.Fragment, tag: o.Tag,
		qPos: -1,
	}
	ws.watchers[id] = w
	h.stats.watchers.Add(1)
	// NB: the created response is queued under h.mu, before the watcher can
	// be given any event.
	ws.push(WatchResponse{WatchID: id, Created: true, Revision: h.rev, Tag: w.tag}, false)
	if o.StartRev == 0 || o.StartRev > h.rev {
		w.next = max(h.rev+1, o.StartRev)
		w.state = watcherSynced
		h.synced.add(w)
	} else {
		w.next = o.StartRev
		w.state = watcherUnsynced
		ws.addLagging(w)
	}
	return id, nil
}

// Reject queues a created-and-canceled response with watch id -1, for a
// creation refused before it reached the stream (etcd's negative start
// revision, permission denied).
func (ws *WatchStream) Reject(reason string) {
	ws.h.mu.Lock()
	defer ws.h.mu.Unlock()
	if !ws.closed {
		ws.rejectLocked(reason)
	}
}

func (ws *WatchStream) rejectLocked(reason string) {
	ws.push(WatchResponse{WatchID: -1, Created: true, Canceled: true, CancelReason: reason, Revision: ws.h.rev}, false)
}

// Cancel removes a watcher and queues its canceled response. Unknown ids
// are ignored, as etcd does; the result says whether the id existed.
func (ws *WatchStream) Cancel(id int64) bool {
	h := ws.h
	h.mu.Lock()
	defer h.mu.Unlock()
	w := ws.watchers[id]
	if w == nil || ws.closed {
		return false
	}
	ws.dropLocked(w)
	delete(ws.watchers, id)
	ws.push(WatchResponse{WatchID: id, Canceled: true, Revision: h.rev, Tag: w.tag}, false)
	return true
}

func (ws *WatchStream) dropLocked(w *watcher) {
	switch w.state {
	case watcherSynced:
		ws.h.synced.remove(w)
	case watcherUnsynced:
		ws.removeLagging(w)
	}
	w.state = watcherGone
	ws.h.stats.watchers.Add(-1)
}

// RequestProgressAll queues a progress notification with ProgressWatchID
// and the hub's revision if every watcher of the stream is in sync; else,
// as etcd, it does nothing (the client learns progress from the events to
// come, or asks again). Because it is queued under the lock that
// publishing holds, it never overtakes an event of an older revision.
func (ws *WatchStream) RequestProgressAll() bool {
	h := ws.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if ws.closed || len(ws.watchers) == 0 {
		return false
	}
	for _, w := range ws.watchers {
		if !w.synced(h.rev) {
			return false
		}
	}
	return ws.push(WatchResponse{WatchID: ProgressWatchID, Revision: h.rev}, true)
}

// RequestProgress queues a progress notification for one watcher if it is
// in sync (etcd's periodic progress_notify).
func (ws *WatchStream) RequestProgress(id int64) bool {
	h := ws.h
	h.mu.Lock()
	defer h.mu.Unlock()
	w := ws.watchers[id]
	if ws.closed || w == nil || !w.synced(h.rev) {
		return false
	}
	return ws.push(WatchResponse{WatchID: id, Revision: h.rev, Tag: w.tag}, true)
}

// Rev returns the hub's revision, the one created and canceled responses
// carry.
func (ws *WatchStream) Rev() int64 { return ws.h.Rev() }

// Close cancels every watcher; queued responses are dropped.
func (ws *WatchStream) Close() {
	h := ws.h
	h.mu.Lock()
	if !ws.closed {
		ws.closed = true
		h.stats.streams.Add(-1)
		for _, w := range ws.watchers {
			ws.dropLocked(w)
		}
		ws.watchers = nil
	}
	h.mu.Unlock()
	ws.mu.Lock()
	h.stats.eventsPending.Add(-int64(ws.qEvents))
	ws.queue, ws.head, ws.qBytes, ws.qEvents = nil, 0, 0, 0
	ws.mu.Unlock()
}

// queued is a response waiting in a stream's queue. Events that joined it
// later are kept as more chunks, each possibly shared with other watchers'
// responses, and joined into one slice only when the sender takes it, so a
// waiting response costs a slice header per batch rather than a copy of its
// events.
type queued struct {
	WatchResponse
	more    [][]*mvccpb.Event
	nEvents int
	bytes   int
}

// queuedLocked returns how many responses wait; ws.mu must be held.
func (ws *WatchStream) queuedLocked() int { return len(ws.queue) - ws.head }

// push appends a control or progress response to the queue. With limit,
// it refuses when the queue is full.
func (ws *WatchStream) push(r WatchResponse, limit bool) bool {
	ws.mu.Lock()
	if limit && ws.queuedLocked() >= ws.h.opts.StreamQueue {
		ws.mu.Unlock()
		return false
	}
	wake := ws.queuedLocked() == 0
	ws.queue = append(ws.queue, queued{WatchResponse: r, nEvents: len(r.Events)})
	ws.addPendingLocked(len(r.Events))
	ws.barrier = ws.base + int64(len(ws.queue)-1)
	ws.mu.Unlock()
	if wake {
		ws.signal()
	}
	return true
}

// mergeMaxEvents and mergeMaxBytes (HubOptions.ResponseMaxBytes' default)
// cap what later revisions may add to a queued response, and what one
// batch puts in one response: many clients
// refuse messages over 4 MiB, and etcd sends a watcher in sync one revision
// per response. (One revision always goes whole, whatever its size.)
const (
	mergeMaxEvents = 1024
	mergeMaxBytes  = 1 << 20
)

// fragmentMaxBytes bounds one catch-up response of a watcher whose
// responses are sent in fragments. etcd bounds it by revisions only (a
// thousand revisions of 1.5 MiB values is 1.5 GiB); past this size the
// events continue in the next response, as they do past catchUpMaxRevs.
// A variable for tests.
var fragmentMaxBytes = 64 << 20

// responseMaxBytes is about the most event bytes a catch-up response to w
// holds past its first revision.
func (w *watcher) responseMaxBytes() int {
	if w.fragment {
		return fragmentMaxBytes
	}
	return w.stream.h.opts.ResponseMaxBytes
}

// eventBytes estimates an event's encoded size.
func eventBytes(ev *mvccpb.Event) int {
	n := 16 + len(ev.Kv.Key) + len(ev.Kv.Value)
	if ev.PrevKv != nil {
		n += 16 + len(ev.PrevKv.Key) + len(ev.PrevKv.Value)
	}
	return n
}

func eventsBytes(evs []*mvccpb.Event) int {
	n := 0
	for _, ev := range evs {
		n += eventBytes(ev)
	}
	return n
}

// pushEvents queues one revision batch's events for w. If w's previous
// response still waits in the queue (the sender is behind), the events join
// it, so a slow consumer gets fewer, larger responses, as etcd's
// catching-up watchers do. It refuses when the queue's bytes would pass
// StreamQueueBytes, or when a new response is needed and the queue is full.
func (ws *WatchStream) pushEvents(w *watcher, evs []*mvccpb.Event, rev int64, revs, bytes int) bool {
	ws.pushes.Add(1)
	ws.mu.Lock()
	if ws.queuedLocked() > 0 && ws.qBytes+bytes > ws.h.opts.StreamQueueBytes {
		ws.mu.Unlock()
		return false
	}
	if i := int(w.qPos - ws.base); w.qPos > ws.barrier && i >= ws.head && i < len(ws.queue) && ws.queue[i].WatchID == w.id &&
		w.qRevs+revs <= catchUpMaxRevs && ws.queue[i].nEvents+len(evs) <= mergeMaxEvents && ws.queue[i].bytes+bytes <= ws.h.opts.ResponseMaxBytes {
		q := &ws.queue[i]
		q.more = append(q.more, evs)
		q.nEvents += len(evs)
		q.bytes += bytes
		q.Revision = rev
		w.qRevs += revs
		ws.qBytes += bytes
		ws.addPendingLocked(len(evs))
		ws.mu.Unlock()
		return true
	}
	if ws.queuedLocked() >= ws.h.opts.StreamQueue {
		ws.mu.Unlock()
		return false
	}
	ws.appendEventsLocked(w, WatchResponse{WatchID: w.id, Events: evs, Revision: rev, Tag: w.tag}, revs, bytes)
	return true
}

// appendEventsLocked queues w's event response r, of revs revisions and
// about bytes bytes, and unlocks ws.mu.
func (ws *WatchStream) appendEventsLocked(w *watcher, r WatchResponse, revs, bytes int) {
	wake := ws.queuedLocked() == 0
	ws.queue = append(ws.queue, queued{WatchResponse: r, nEvents: len(r.Events), bytes: bytes})
	ws.qBytes += bytes
	ws.addPendingLocked(len(r.Events))
	w.qPos, w.qRevs = ws.base+int64(len(ws.queue)-1), revs
	ws.mu.Unlock()
	if wake {
		ws.signal()
	}
}

// addPendingLocked counts n events into (or, negative, out of) the queue;
// ws.mu must be held.
func (ws *WatchStream) addPendingLocked(n int) {
	if n != 0 {
		ws.qEvents += n
		ws.h.stats.eventsPending.Add(int64(n))
	}
}

// take moves up to max waiting responses to buf and says how many still
// wait.
func (ws *WatchStream) take(buf []WatchResponse, max int) ([]WatchResponse, int) {
	ws.mu.Lock()
	end := min(len(ws.queue), ws.head+max)
	for i := ws.head; i < end; i++ {
		q := &ws.queue[i]
		r := q.WatchResponse
		if len(q.more) > 0 {
			evs := make([]*mvccpb.Event, 0, q.nEvents)
			evs = append(evs, r.Events...)
			for _, m := range q.more {
				evs = append(evs, m...)
			}
			r.Events = evs
		}
		ws.qBytes -= q.bytes
		ws.addPendingLocked(-q.nEvents)
		buf = append(buf, r)
	}
	clear(ws.queue[ws.head:end])
	ws.head = end
	switch {
	case ws.head == len(ws.queue):
		ws.base += int64(len(ws.queue))
		ws.queue, ws.head = ws.queue[:0], 0
	case ws.head >= 256 && ws.head*2 >= len(ws.queue):
		// NB: keep the array from growing while the sender trails.
		n := copy(ws.queue, ws.queue[ws.head:])
		clear(ws.queue[n:])
		ws.base += int64(ws.head)
		ws.queue, ws.head = ws.queue[:n], 0
	}
	left := ws.queuedLocked()
	ws.mu.Unlock()
	return buf, left
}

// Pushes returns how many times events were queued for a watcher of the
// stream so far (each revision batch a watcher receives counts once).
func (ws *WatchStream) Pushes() uint64 { return ws.pushes.Load() }

// Urgent reports whether a control response (created, canceled, progress)
// waits in the queue: the sender should not hold it back to batch events.
func (ws *WatchStream) Urgent() bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.barrier >= ws.base+int64(ws.head)
}

func (ws *WatchStream) queued() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.queuedLocked()
}

func (ws *WatchStream) signal() {
	select {
	case ws.ready <- struct{}{}:
	default:
	}
}

func (ws *WatchStream) addLagging(w *watcher) {
	w.lagSlot = len(ws.lagging)
	ws.lagging = append(ws.lagging, w)
	ws.lagN.Store(int32(len(ws.lagging)))
	ws.h.stats.lagging.Add(1)
	ws.signal()
}

func (ws *WatchStream) removeLagging(w *watcher) {
	last := len(ws.lagging) - 1
	moved := ws.lagging[last]
	ws.lagging[w.lagSlot] = moved
	moved.lagSlot = w.lagSlot
	ws.lagging[last] = nil
	ws.lagging = ws.lagging[:last]
	ws.lagN.Store(int32(len(ws.lagging)))
	ws.h.stats.lagging.Add(-1)
}

// Ready is signaled when Next has something to return.
func (ws *WatchStream) Ready() <-chan struct{} { return ws.ready }

// takeMax is how many responses Next hands out at once: few, so that
// events for a watcher whose response is still waiting join it.
const takeMax = 8

// catchUpEvery bounds how many responses Next hands out before it runs a
// catch-up step even though the queue is not empty, so that lagging
// watchers are not starved by busy ones.
const catchUpEvery = 256

// Next appends to buf, in order, the next responses to send. When
// watchers are behind and the queue is (nearly) drained, it first runs one
// catch-up step, which queues their next responses. more reports that Next
// should be called again without waiting for Ready. An error means the
// change log could not be read; the stream cannot continue.
func (ws *WatchStream) Next(ctx context.Context, buf []WatchResponse) (out []WatchResponse, more bool, err error) {
	if ws.lagN.Load() > 0 && (ws.sinceCatchUp >= catchUpEvery || ws.queued() == 0) {
		ws.sinceCatchUp = 0
		if err := ws.catchUp(ctx); err != nil {
			return buf, false, err
		}
	}
	n := len(buf)
	out, left := ws.take(buf, takeMax)
	ws.sinceCatchUp += len(out) - n
	events := 0
	for i := n; i < len(out); i++ {
		events += len(out[i].Events)
	}
	ws.h.stats.responsesSent.Add(int64(len(out) - n))
	ws.h.stats.eventsSent.Add(int64(events))
	return out, left > 0 || ws.lagN.Load() > 0, nil
}

// catchUpEntry is a lagging watcher's part of one catch-up step.
type catchUpEntry struct {
	w    *watcher
	next int64
	outs []WatchResponse // full responses (catchUpMaxRevs revisions) made in this step
}

// catchUp runs one step for the stream's lagging watchers: one read of at
// most catchUpMaxRevs matching revisions (and CatchUpScan change-log
// entries) from the oldest revision they need. Each watcher collects its
// events and gets a response queued once it has catchUpMaxRevs revisions
// or has reached the hub's revision, when it rejoins the live fan-out. As
// a lagging watcher gets no live events, whatever this queues for it
// follows everything queued for it before.
func (ws *WatchStream) catchUp(ctx context.Context) error {
	h := ws.h
	h.mu.Lock()
	if ws.closed {
		h.mu.Unlock()
		return nil
	}
	head := h.rev
	compactRev := h.s.CompactRev()
	batch := ws.batch[:0]
	from, prevKV := int64(math.MaxInt64), false
	for i := 0; i < len(ws.lagging); {
		w := ws.lagging[i]
		if w.next < compactRev {
			// etcd's order: created first, then canceled with the compacted
			// revision; the id stays taken until the client cancels it.
			ws.flushPending(w, head)
			ws.push(WatchResponse{WatchID: w.id, CompactRevision: compactRev, Canceled: true, Tag: w.tag}, false)
			ws.removeLagging(w)
			w.state = watcherCompacted
			h.stats.compacted.Add(1)
			continue
		}
		batch = append(batch, catchUpEntry{w: w, next: w.next})
		from = min(from, w.next)
		prevKV = prevKV || w.prevKV
		i++
	}
	h.mu.Unlock()
	ws.batch = batch
	defer clear(batch)
	if len(batch) == 0 {
		return nil
	}

	m := newCatchUpMatcher(batch)
	revs, through, err := h.read(ctx, from, head, m.matches, prevKV)
	if errors.Is(err, ErrCompacted) {
		return nil // the next step cancels whoever is below it
	}
	if err != nil {
		return err
	}
	// NB: while a watcher lags only this goroutine touches its pending
	// events; the hub's lock is not needed for them.
	for _, re := range revs {
		for i, ev := range re.full {
			m.visit(ev.Kv.Key, func(e *catchUpEntry) {
				w := e.w
				if re.rev < e.next || w.filtered(ev) {
					return
				}
				// A response holds at most catchUpMaxRevs revisions and,
				// past one revision, about responseMaxBytes.
				if re.rev != w.pendingLast && (w.pendingRevs == catchUpMaxRevs || w.pendingRevs > 0 && w.pendingBytes >= w.responseMaxBytes()) {
					r, _, _ := w.takePending(head)
					e.outs = append(e.outs, r)
				}
				if re.rev != w.pendingLast {
					w.pendingRevs++
					w.pendingLast = re.rev
				}
				out := ev
				if !w.prevKV {
					out = re.bare[i]
				}
				w.pending = append(w.pending, out)
				w.pendingBytes += eventBytes(out)
			})
		}
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range batch {
		e := &batch[i]
		w := e.w
		if w.state != watcherUnsynced {
			w.pending = nil // canceled meanwhile
			continue
		}
		for _, r := range e.outs {
			ws.mu.Lock()
			ws.appendEventsLocked(w, r, catchUpMaxRevs, eventsBytes(r.Events))
		}
		// NB: the read started at the batch's oldest revision; a watcher
		// further ahead stays where it is.
		w.next = max(e.next, through)
		if w.next == h.rev+1 {
			ws.flushPending(w, head)
			ws.removeLagging(w)
			w.state = watcherSynced
			h.synced.add(w)
		}
	}
	return nil
}

// flushPending queues the events a lagging watcher collected.
func (ws *WatchStream) flushPending(w *watcher, rev int64) {
	if r, revs, ok := w.takePending(rev); ok {
		ws.mu.Lock()
		ws.appendEventsLocked(w, r, revs, eventsBytes(r.Events))
	}
}

// takePending turns the events a lagging watcher collected into a
// response, and says how many revisions it holds.
func (w *watcher) takePending(rev int64) (WatchResponse, int, bool) {
	if len(w.pending) == 0 {
		return WatchResponse{}, 0, false
	}
	r := WatchResponse{WatchID: w.id, Events: w.pending, Revision: rev, Tag: w.tag}
	revs := w.pendingRevs
	w.pending, w.pendingRevs, w.pendingLast, w.pendingBytes = nil, 0, 0, 0
	return r, revs, true
}

// catchUpMatcher finds the catch-up entries whose watchers watch a key.
type catchUpMatcher struct {
	keys   map[string][]*catchUpEntry
	ranges intervalTree[*[]*catchUpEntry]
}

func newCatchUpMatcher(batch []catchUpEntry) *catchUpMatcher {
	m := &catchUpMatcher{keys: make(map[string][]*catchUpEntry)}
	for i := range batch {
		e := &batch[i]
		w := e.w
		if w.end == nil {
			m.keys[string(w.key)] = append(m.keys[string(w.key)], e)
			continue
		}
		inf := len(w.end) == 0
		if p, ok := m.ranges.Get(string(w.key), string(w.end), inf); ok {
			*p = append(*p, e)
			continue
		}
		m.ranges.Insert(string(w.key), string(w.end), inf, &[]*catchUpEntry{e})
	}
	return m
}

func (m *catchUpMatcher) matches(key []byte) bool {
	if _, ok := m.keys[string(key)]; ok {
		return true
	}
	return m.ranges.Intersects(key)
}

func (m *catchUpMatcher) visit(key []byte, f func(*catchUpEntry)) {
	for _, e := range m.keys[string(key)] {
		f(e)
	}
	m.ranges.Stab(key, func(p *[]*catchUpEntry) {
		for _, e := range *p {
			f(e)
		}
	})
}

// watcherGroup is the set of in-sync watchers with the same key range.
type watcherGroup struct {
	key, end []byte
	ws       []*watcher
}

// watcherIndex finds the in-sync watchers of a key: single-key watchers by
// map, range watchers by interval tree, each entry a group of watchers with
// the same range.
type watcherIndex struct {
	keys   map[string]*watcherGroup
	ranges intervalTree[*watcherGroup]
	n      int
}

func (x *watcherIndex) init() { x.keys = make(map[string]*watcherGroup) }

func (x *watcherIndex) len() int { return x.n }

func (x *watcherIndex) add(w *watcher) {
	var g *watcherGroup
	if w.end == nil {
		g = x.keys[string(w.key)]
		if g == nil {
			g = &watcherGroup{key: w.key}
			x.keys[string(w.key)] = g
		}
	} else {
		inf := len(w.end) == 0
		var ok bool
		if g, ok = x.ranges.Get(string(w.key), string(w.end), inf); !ok {
			g = &watcherGroup{key: w.key, end: w.end}
			x.ranges.Insert(string(w.key), string(w.end), inf, g)
		}
	}
	w.group, w.slot = g, len(g.ws)
	g.ws = append(g.ws, w)
	x.n++
}

func (x *watcherIndex) remove(w *watcher) {
	g := w.group
	last := len(g.ws) - 1
	moved := g.ws[last]
	g.ws[w.slot] = moved
	moved.slot = w.slot
	g.ws[last] = nil
	g.ws = g.ws[:last]
	w.group = nil
	x.n--
	if len(g.ws) > 0 {
		return
	}
	if g.end == nil {
		delete(x.keys, string(g.key))
	} else {
		x.ranges.Delete(string(g.key), string(g.end), len(g.end) == 0)
	}
}

func (x *watcherIndex) each(f func(*watcher)) {
	for _, g := range x.keys {
		for _, w := range g.ws {
			f(w)
		}
	}
	var walk func(n *ivNode[*watcherGroup])
	walk = func(n *ivNode[*watcherGroup]) {
		if n == nil {
			return
		}
		walk(n.left)
		for _, w := range n.val.ws {
			f(w)
		}
		walk(n.right)
	}
	walk(x.ranges.root)
}
