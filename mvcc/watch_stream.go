package mvcc

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Watch streams: a client stream's watchers, its response queue and Next.
// The hub (watch.go) feeds them; lagging watchers catch up from the
// change log (watch_catchup.go).

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
	if w.prevKV {
		h.s.prevWatchers.Add(1)
	}
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
	if w.prevKV {
		ws.h.s.prevWatchers.Add(-1)
	}
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
