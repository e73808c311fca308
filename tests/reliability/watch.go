package reliability

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// WatchSpec describes one recorded watcher.
type WatchSpec struct {
	// Name identifies the watcher in violations.
	Name string
	// Key and End are the watched range in etcd's convention: End ""
	// watches the single key.
	Key, End string
	// PrevKV and ProgressNotify are the create request's options.
	PrevKV, ProgressNotify bool
}

func (s WatchSpec) matches(key string) bool {
	if s.End == "" {
		return key == s.Key
	}
	return key >= s.Key && key < s.End
}

// WatchEvent is one event as a watcher saw it, or as the committed history
// says it must be.
type WatchEvent struct {
	Rev    int64
	Key    int
	Delete bool
	// KV is the key after a put; for a delete etcd sends only the key and
	// the deletion's revision (KV{Mod: Rev}).
	KV KV
	// Prev is the previous key-value when the watcher asked for it (zero:
	// none, or the key did not exist).
	Prev KV
}

func (e WatchEvent) String() string {
	op := "put"
	if e.Delete {
		op = "del"
	}
	s := fmt.Sprintf("%d:%s(%s)=%s", e.Rev, op, KeyName(e.Key), e.KV)
	if e.Prev.Version > 0 {
		s += " prev " + e.Prev.String()
	}
	return s
}

// RecordKind is what a watch response was.
type RecordKind uint8

// The kinds of recorded responses.
const (
	RecCreated RecordKind = iota
	RecEvents
	RecProgress
	RecCanceled
)

// WatchRecord is one response a watcher received (or, for RecCreated, the
// creation it asked for and the server confirmed).
type WatchRecord struct {
	Kind RecordKind
	// Start is RecCreated's start revision.
	Start int64
	// Rev is the response header's revision.
	Rev    int64
	Events []WatchEvent
	// Stream marks a progress notification for the whole stream (watch id
	// -1, the answer to a RequestProgress).
	Stream bool
	// Reason is RecCanceled's cancel reason.
	Reason string
}

// WatchRecording is everything one watcher received, across the streams it
// was re-created on.
type WatchRecording struct {
	Spec WatchSpec
	// Start is the first revision it asked for.
	Start   int64
	Records []WatchRecord
}

// WatchRecorder keeps watchers open on some streams for the length of a
// run and records every response. When a stream breaks (the server was
// killed), it opens a new one and re-creates each watcher from the
// revision after the newest it knows it has seen, as clientv3 does.
type WatchRecorder struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	cond      *sync.Cond
	recs      []*WatchRecording
	next      []int64 // per watcher: the revision to resume from
	streams   int     // streams opened (re-creations included)
	progressN int
}

// watchIDBase is the first client-chosen watch id (0 asks the server to
// choose).
const watchIDBase = 100

// StartWatchers opens one stream per group on the matching client, with the
// group's watchers starting at revision start, and sends a RequestProgress
// on each stream every progressEvery.
func StartWatchers(clients []pb.WatchClient, groups [][]WatchSpec, start int64, progressEvery time.Duration) *WatchRecorder {
	ctx, cancel := context.WithCancel(context.Background())
	r := &WatchRecorder{ctx: ctx, cancel: cancel}
	r.cond = sync.NewCond(&r.mu)
	// NB: every recording exists before a stream goroutine starts.
	firsts := make([]int, len(groups))
	for gi, g := range groups {
		firsts[gi] = len(r.recs)
		for _, spec := range g {
			r.recs = append(r.recs, &WatchRecording{Spec: spec, Start: start})
			r.next = append(r.next, start)
		}
	}
	for gi, g := range groups {
		r.wg.Add(1)
		go func(wc pb.WatchClient, first, n int) {
			defer r.wg.Done()
			r.runStream(wc, first, n, progressEvery)
		}(clients[gi%len(clients)], firsts[gi], len(g))
	}
	return r
}

// runStream keeps one stream of watchers recs[first:first+n] open until the
// recorder stops.
func (r *WatchRecorder) runStream(wc pb.WatchClient, first, n int, progressEvery time.Duration) {
	for r.ctx.Err() == nil {
		if err := r.stream(wc, first, n, progressEvery); err != nil && r.ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// stream is one incarnation of a stream: create every watcher from where it
// left off, then record responses until the stream fails.
func (r *WatchRecorder) stream(wc pb.WatchClient, first, n int, progressEvery time.Duration) error {
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	st, err := wc.Watch(ctx, waitReady)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.streams++
	starts := make([]int64, n)
	copy(starts, r.next[first:first+n])
	r.mu.Unlock()
	for i := 0; i < n; i++ {
		spec := r.recs[first+i].Spec
		req := &pb.WatchCreateRequest{Key: []byte(spec.Key), StartRevision: starts[i], PrevKv: spec.PrevKV,
			ProgressNotify: spec.ProgressNotify, WatchId: int64(watchIDBase + i)}
		if spec.End != "" {
			req.RangeEnd = []byte(spec.End)
		}
		if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: req}}); err != nil {
			return err
		}
	}
	var sendMu sync.Mutex
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				sendMu.Lock()
				err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
				sendMu.Unlock()
				if err != nil {
					return
				}
			case <-done:
				return
			}
		}
	}()
	created := 0
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		rev := resp.Header.GetRevision()
		r.mu.Lock()
		switch {
		case resp.WatchId == -1 && !resp.Created && !resp.Canceled && len(resp.Events) == 0:
			if created == n { // before that, it cannot speak for watchers not yet created
				for i := 0; i < n; i++ {
					r.add(first+i, WatchRecord{Kind: RecProgress, Rev: rev, Stream: true})
				}
				r.progressN++
			}
		case resp.WatchId < watchIDBase || resp.WatchId >= int64(watchIDBase+n):
			r.mu.Unlock()
			return fmt.Errorf("response for unknown watch id %d: %v", resp.WatchId, resp)
		default:
			i := int(resp.WatchId - watchIDBase)
			switch {
			case resp.Created:
				created++
				r.add(first+i, WatchRecord{Kind: RecCreated, Start: starts[i], Rev: rev})
			case resp.Canceled:
				r.add(first+i, WatchRecord{Kind: RecCanceled, Rev: rev, Reason: resp.CancelReason})
			case len(resp.Events) > 0:
				rec := WatchRecord{Kind: RecEvents, Rev: rev, Events: make([]WatchEvent, 0, len(resp.Events))}
				for _, ev := range resp.Events {
					rec.Events = append(rec.Events, toWatchEvent(ev))
				}
				r.add(first+i, rec)
			default:
				r.add(first+i, WatchRecord{Kind: RecProgress, Rev: rev})
				r.progressN++
			}
		}
		r.cond.Broadcast()
		r.mu.Unlock()
	}
}

// add records rec for watcher i and advances where it would resume; r.mu
// held.
func (r *WatchRecorder) add(i int, rec WatchRecord) {
	r.recs[i].Records = append(r.recs[i].Records, rec)
	switch rec.Kind {
	case RecEvents:
		r.next[i] = max(r.next[i], rec.Events[len(rec.Events)-1].Rev+1)
	case RecProgress:
		r.next[i] = max(r.next[i], rec.Rev+1)
	}
}

func toWatchEvent(ev *mvccpb.Event) WatchEvent {
	k, ok := keyIndex(string(ev.Kv.Key))
	if !ok {
		k = -1 // not a key of the workload: no committed event matches it
	}
	we := WatchEvent{Rev: ev.Kv.ModRevision, Key: k, Delete: ev.Type == mvccpb.DELETE, KV: toKV(ev.Kv)}
	if ev.PrevKv != nil {
		we.Prev = toKV(ev.PrevKv)
	}
	return we
}

// Finish waits until every watcher has seen revision rev (by an event or a
// progress notification), stops the streams and returns the recordings.
// The caller must make sure nothing writes after rev.
func (r *WatchRecorder) Finish(rev int64, timeout time.Duration) ([]WatchRecording, error) {
	deadline := time.AfterFunc(timeout, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer deadline.Stop()
	end := time.Now().Add(timeout)
	r.mu.Lock()
	var err error
	for {
		behind := -1
		for i, n := range r.next {
			if n <= rev {
				behind = i
				break
			}
		}
		if behind < 0 {
			break
		}
		if time.Now().After(end) {
			err = fmt.Errorf("watcher %s has not seen revision %d within %v (resumes at %d)", r.recs[behind].Spec.Name, rev, timeout, r.next[behind])
			break
		}
		r.cond.Wait()
	}
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	out := make([]WatchRecording, len(r.recs))
	for i, rec := range r.recs {
		out[i] = *rec
	}
	return out, err
}

// Stats returns how many streams were opened (a re-creation after a crash
// counts) and progress notifications recorded.
func (r *WatchRecorder) Stats() (streams, progress int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.streams, r.progressN
}

// Committed is the history of the workload's keys as the store's revisions
// say it was: the events of each revision in (From-1, To].
type Committed struct {
	From, To int64
	Revs     map[int64][]WatchEvent // with Prev; sorted by key
}

// ReadCommitted reads every key of the workload at each revision from
// from-1 to to and derives each revision's events from the difference. The
// revisions must not be compacted.
func ReadCommitted(ctx context.Context, kv pb.KVClient, from, to int64) (*Committed, error) {
	c := &Committed{From: from, To: to, Revs: make(map[int64][]WatchEvent)}
	read := func(rev int64) ([NumKeys]KV, error) {
		var all [NumKeys]KV
		if rev < 1 {
			return all, nil
		}
		r, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte(KeyPrefix), RangeEnd: []byte(KeyPrefixEnd), Revision: rev}, waitReady)
		if err != nil {
			return all, fmt.Errorf("range at %d: %w", rev, err)
		}
		for _, x := range r.Kvs {
			i, ok := keyIndex(string(x.Key))
			if !ok {
				return all, fmt.Errorf("unexpected key %q", x.Key)
			}
			all[i] = toKV(x)
		}
		return all, nil
	}
	prev, err := read(from - 1)
	if err != nil {
		return nil, err
	}
	for rev := from; rev <= to; rev++ {
		cur, err := read(rev)
		if err != nil {
			return nil, err
		}
		var evs []WatchEvent
		for i := range cur {
			switch {
			case cur[i].Mod == rev:
				evs = append(evs, WatchEvent{Rev: rev, Key: i, KV: cur[i], Prev: prev[i]})
			case cur[i].Version == 0 && prev[i].Version > 0:
				evs = append(evs, WatchEvent{Rev: rev, Key: i, Delete: true, KV: KV{Mod: rev}, Prev: prev[i]})
			}
		}
		c.Revs[rev] = evs
		prev = cur
	}
	return c, nil
}

// Events returns the number of events in the committed history.
func (c *Committed) Events() int {
	n := 0
	for _, evs := range c.Revs {
		n += len(evs)
	}
	return n
}
