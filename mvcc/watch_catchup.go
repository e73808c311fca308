package mvcc

import (
	"context"
	"errors"
	"math"
)

// Catch-up: watchers behind the hub read the revision-ordered change log
// in bounded steps until they are in sync.

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
