package compat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestWatchRandomized runs concurrent writers, periodic compaction and many
// watchers against each backend. Some watchers read slowly on raw streams
// (so the server's sends block on flow control), some cancel and resume
// from the last revision they saw, and a watcher canceled for compaction
// resumes from the compacted revision. From the writers' acknowledgements
// the test rebuilds the committed history and requires that every watcher
// saw exactly that history for its range: every revision once, in order,
// each revision's events together, with the right versions and previous
// values; the only gaps allowed are the ones a compaction cancellation
// announced.
//
// METASTORE_WATCH_RANDOM_OPS=<n> sets the operations per writer (default 250).
func TestWatchRandomized(t *testing.T) {
	ops := 250
	if s := os.Getenv("METASTORE_WATCH_RANDOM_OPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("METASTORE_WATCH_RANDOM_OPS: %v", err)
		}
		ops = n
	}
	for _, b := range framework.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			runWatchRandomized(t, b, ops)
		})
	}
}

// change is one event of the reference history, as the writer knows it.
type change struct {
	del   bool
	key   string
	value string
}

// refHistory is the committed history rebuilt from acknowledgements.
type refHistory struct {
	mu   sync.Mutex
	revs map[int64][]change
}

func (h *refHistory) add(rev int64, cs ...change) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, dup := h.revs[rev]; dup {
		return fmt.Errorf("revision %d acknowledged twice", rev)
	}
	h.revs[rev] = cs
	return nil
}

// events replays the history and returns every revision's events with
// create revision, version and previous key-value filled in.
func (h *refHistory) events(final int64) (map[int64][]*mvccpb.Event, error) {
	live := map[string]*mvccpb.KeyValue{}
	out := map[int64][]*mvccpb.Event{}
	for rev := int64(2); rev <= final; rev++ {
		cs, ok := h.revs[rev]
		if !ok {
			return nil, fmt.Errorf("revision %d was never acknowledged", rev)
		}
		for _, c := range cs {
			p := live[c.key]
			if c.del {
				out[rev] = append(out[rev], &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(c.key), ModRevision: rev}, PrevKv: p})
				delete(live, c.key)
				continue
			}
			kv := &mvccpb.KeyValue{Key: []byte(c.key), Value: []byte(c.value), CreateRevision: rev, ModRevision: rev, Version: 1}
			if p != nil {
				kv.CreateRevision, kv.Version = p.CreateRevision, p.Version+1
			}
			out[rev] = append(out[rev], &mvccpb.Event{Type: mvccpb.PUT, Kv: kv, PrevKv: p})
			live[c.key] = kv
		}
	}
	return out, nil
}

// watchSpec is what one randomized watcher watches.
type watchSpec struct {
	key, end        string // end "" single key, "\x00" from key
	prevKV          bool
	noPut, noDelete bool
	start           int64
}

func (s watchSpec) String() string {
	return fmt.Sprintf("[%q,%q) prev=%v noput=%v nodel=%v start=%d", s.key, s.end, s.prevKV, s.noPut, s.noDelete, s.start)
}

func (s watchSpec) matches(ev *mvccpb.Event) bool {
	k := string(ev.Kv.Key)
	in := k == s.key
	if s.end == "\x00" {
		in = k >= s.key
	} else if s.end != "" {
		in = k >= s.key && k < s.end
	}
	return in && !(s.noPut && ev.Type == mvccpb.PUT) && !(s.noDelete && ev.Type == mvccpb.DELETE)
}

// watchLog is what one watcher received.
type watchLog struct {
	spec   watchSpec
	events []*mvccpb.Event
	// gaps are revision ranges [from, to] a compaction cancellation
	// excused.
	gaps [][2]int64
	// done is the revision through which the watcher is known complete.
	done    int64
	resumes int
	errs    []string
}

func (l *watchLog) errorf(format string, args ...any) {
	l.errs = append(l.errs, fmt.Sprintf(format, args...))
}

// take appends one response's events, checking order and that a revision
// is never split across responses.
func (l *watchLog) take(evs []*mvccpb.Event) {
	if len(evs) == 0 {
		return
	}
	if n := len(l.events); n > 0 {
		last := l.events[n-1].Kv.ModRevision
		if evs[0].Kv.ModRevision <= last {
			l.errorf("response starting at revision %d after revision %d", evs[0].Kv.ModRevision, last)
		}
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Kv.ModRevision < evs[i-1].Kv.ModRevision {
			l.errorf("events out of order in one response: %d after %d", evs[i].Kv.ModRevision, evs[i-1].Kv.ModRevision)
		}
	}
	l.events = append(l.events, evs...)
}

func (l *watchLog) next() int64 {
	if n := len(l.events); n > 0 {
		return max(l.events[n-1].Kv.ModRevision+1, l.spec.start)
	}
	return l.spec.start
}

func runWatchRandomized(t *testing.T, b framework.Backend, opsPerWriter int) {
	srv := b.Start(t, framework.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hist := &refHistory{revs: map[int64][]change{}}
	keys := make([]string, 16)
	for i := range keys {
		keys[i] = fmt.Sprintf("k/%02d", i)
	}
	value := func(rng *rand.Rand, w, i int) string {
		// some values large enough to fill flow-control windows
		return fmt.Sprintf("w%d-%d-", w, i) + strings.Repeat("x", rng.IntN(3000))
	}

	var writersDone atomic.Bool
	var lastCompact atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}

	// Writers.
	const writers = 4
	var writerWG sync.WaitGroup
	for w := range writers {
		writerWG.Add(1)
		go func() {
			defer writerWG.Done()
			cli := srv.Client(t)
			kv := pb.NewKVClient(cli.ActiveConnection())
			rng := rand.New(rand.NewPCG(uint64(w), 77))
			for i := range opsPerWriter {
				if ctx.Err() != nil {
					return
				}
				k := keys[rng.IntN(len(keys))]
				var err error
				switch rng.IntN(10) {
				case 0, 1:
					var r *pb.DeleteRangeResponse
					if r, err = kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte(k), PrevKv: true}); err == nil && r.Deleted > 0 {
						err = hist.add(r.Header.Revision, change{del: true, key: k})
					}
				case 2:
					// delete a whole decade of keys in one revision
					p := k[:3]
					var r *pb.DeleteRangeResponse
					if r, err = kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte(p), RangeEnd: []byte(prefixEnd(p)), PrevKv: true}); err == nil && r.Deleted > 0 {
						var cs []change
						for _, p := range r.PrevKvs {
							cs = append(cs, change{del: true, key: string(p.Key)})
						}
						err = hist.add(r.Header.Revision, cs...)
					}
				case 3:
					k2 := keys[(slices.Index(keys, k)+1+rng.IntN(len(keys)-1))%len(keys)]
					v1, v2 := value(rng, w, i), value(rng, w, i)+"b"
					var r *pb.TxnResponse
					if r, err = kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{opPut(k, v1), opPut(k2, v2)}}); err == nil {
						err = hist.add(r.Header.Revision, change{key: k, value: v1}, change{key: k2, value: v2})
					}
				default:
					v := value(rng, w, i)
					var r *pb.PutResponse
					if r, err = kv.Put(ctx, &pb.PutRequest{Key: []byte(k), Value: []byte(v)}); err == nil {
						err = hist.add(r.Header.Revision, change{key: k, value: v})
					}
				}
				if err != nil {
					fail(fmt.Errorf("writer %d: %w", w, err))
					return
				}
			}
		}()
	}

	// Compaction, keeping the newest 60 revisions.
	wg.Add(1)
	go func() {
		defer wg.Done()
		cli := srv.Client(t)
		for !writersDone.Load() {
			time.Sleep(40 * time.Millisecond)
			r, err := cli.Get(ctx, "k/none")
			if err != nil {
				fail(err)
				return
			}
			if rev := r.Header.Revision - 60; rev > lastCompact.Load() {
				if _, err := cli.Compact(ctx, rev); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
					fail(fmt.Errorf("compact %d: %w", rev, err))
					return
				}
				lastCompact.Store(rev)
			}
		}
	}()

	specs := []watchSpec{
		{key: "k/03"}, {key: "k/07", prevKV: true}, {key: "k/0", end: prefixEnd("k/0")},
		{key: "k/0", end: prefixEnd("k/0"), prevKV: true, noDelete: true}, {key: "k/1", end: "\x00", prevKV: true},
		{key: "\x00", end: "\x00"}, {key: "k/05", end: "k/12", noPut: true}, {key: "k/", end: prefixEnd("k/"), prevKV: true},
	}
	var logs []*watchLog
	var finalRev atomic.Int64

	// clientv3 watchers; odd ones resume from their last revision now and
	// then.
	for i, spec := range specs {
		l := &watchLog{spec: spec}
		l.spec.start = 1
		logs = append(logs, l)
		wg.Add(1)
		go func() {
			defer wg.Done()
			runClientWatcher(ctx, srv.Client(t), l, i%2 == 1, &finalRev)
		}()
	}
	// A late watcher from revision 1, once compaction has begun: it is
	// canceled for compaction and resumes from the compacted revision.
	late := &watchLog{spec: watchSpec{key: "k/", end: prefixEnd("k/"), prevKV: true, start: 1}}
	logs = append(logs, late)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for lastCompact.Load() < 2 && ctx.Err() == nil { // a compaction at 1 cancels nothing from 1
			time.Sleep(10 * time.Millisecond)
		}
		runClientWatcher(ctx, srv.Client(t), late, false, &finalRev)
		if len(late.gaps) == 0 {
			late.errorf("the late watcher was not canceled for compaction")
		}
	}()
	// Raw-stream watchers that read slowly, several per stream.
	for s := range 2 {
		var group []*watchLog
		for i := range 4 {
			l := &watchLog{spec: specs[(s*4+i)%len(specs)]}
			l.spec.start = 1
			group = append(group, l)
			logs = append(logs, l)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runSlowStream(ctx, srv.Client(t), group, &finalRev)
		}()
	}

	writerWG.Wait()
	writersDone.Store(true)
	select {
	case err := <-errc:
		cancel()
		wg.Wait()
		t.Fatal(err)
	default:
	}
	r, err := srv.Client(t).Get(ctx, "k/none")
	if err != nil {
		t.Fatal(err)
	}
	finalRev.Store(r.Header.Revision)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	if ctx.Err() != nil {
		for i, l := range logs {
			t.Logf("watcher %d %s: done %d, next %d, %d events, %d resumes", i, l.spec, l.done, l.next(), len(l.events), l.resumes)
		}
		t.Fatalf("timed out; final revision %d", finalRev.Load())
	}

	ref, err := hist.events(finalRev.Load())
	if err != nil {
		t.Fatal(err)
	}
	compactRev := lastCompact.Load()
	resumes, gaps, events := 0, 0, 0
	for i, l := range logs {
		checkWatchLog(t, fmt.Sprintf("watcher %d %s", i, l.spec), l, ref, finalRev.Load(), compactRev)
		resumes, gaps, events = resumes+l.resumes, gaps+len(l.gaps), events+len(l.events)
	}
	t.Logf("%s: %d revisions, %d watchers saw %d events, resumed %d times (%d after compaction), compacted through %d",
		b.Name, finalRev.Load(), len(logs), events, resumes, gaps, compactRev)
}

// runClientWatcher watches through clientv3 until it knows it has seen
// everything through the final revision.
func runClientWatcher(ctx context.Context, cli *clientv3.Client, l *watchLog, resume bool, finalRev *atomic.Int64) {
	rng := rand.New(rand.NewPCG(uint64(len(l.spec.key)), uint64(l.spec.start)))
	for ctx.Err() == nil {
		opts := []clientv3.OpOption{clientv3.WithRev(l.next())}
		switch l.spec.end {
		case "":
		case "\x00":
			opts = append(opts, clientv3.WithFromKey())
		default:
			opts = append(opts, clientv3.WithRange(l.spec.end))
		}
		if l.spec.prevKV {
			opts = append(opts, clientv3.WithPrevKV())
		}
		if l.spec.noPut {
			opts = append(opts, clientv3.WithFilterPut())
		}
		if l.spec.noDelete {
			opts = append(opts, clientv3.WithFilterDelete())
		}
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := cli.Watch(wctx, l.spec.key, opts...)
		restart := false
		progressAsked := time.Time{}
		for !restart {
			if f := finalRev.Load(); f != 0 && l.done >= f {
				wcancel()
				return
			}
			var wr clientv3.WatchResponse
			var ok bool
			select {
			case wr, ok = <-wch:
			case <-time.After(50 * time.Millisecond):
				if finalRev.Load() != 0 && time.Since(progressAsked) > 50*time.Millisecond {
					cli.RequestProgress(wctx)
					progressAsked = time.Now()
				}
				continue
			case <-ctx.Done():
				wcancel()
				return
			}
			switch {
			case !ok:
				restart = true
			case wr.CompactRevision != 0:
				if wr.CompactRevision <= l.next()-1 {
					l.errorf("compacted at %d after seeing %d", wr.CompactRevision, l.next()-1)
				}
				l.gaps = append(l.gaps, [2]int64{l.next(), wr.CompactRevision - 1})
				l.spec.start = wr.CompactRevision
				l.resumes++
				restart = true
			case wr.Canceled:
				l.errorf("canceled: %v", wr.Err())
				restart = true
			case wr.IsProgressNotify():
				l.done = max(l.done, wr.Header.Revision)
			default:
				evs := make([]*mvccpb.Event, len(wr.Events))
				for i, ev := range wr.Events {
					evs[i] = (*mvccpb.Event)(ev)
				}
				l.take(evs)
				l.done = max(l.done, evs[len(evs)-1].Kv.ModRevision)
				if resume && rng.IntN(25) == 0 {
					l.resumes++
					restart = true
				}
			}
		}
		wcancel()
		// drain what the canceled watch still delivers
		for range wch {
		}
	}
}

// runSlowStream watches on one raw stream and reads it slowly, so that
// the server's sends block on flow control and its watchers fall behind.
func runSlowStream(ctx context.Context, cli *clientv3.Client, logs []*watchLog, finalRev *atomic.Int64) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(sctx)
	if err != nil {
		logs[0].errorf("open stream: %v", err)
		return
	}
	// ids maps watch ids to logs; a watcher canceled for compaction is
	// created again from the compacted revision under a new id.
	ids := map[int64]*watchLog{}
	nextID := int64(1)
	create := func(l *watchLog) bool {
		r := &pb.WatchCreateRequest{Key: []byte(l.spec.key), StartRevision: l.next(), PrevKv: l.spec.prevKV, WatchId: nextID}
		if l.spec.end != "" {
			r.RangeEnd = []byte(l.spec.end)
		}
		if l.spec.noPut {
			r.Filters = append(r.Filters, pb.WatchCreateRequest_NOPUT)
		}
		if l.spec.noDelete {
			r.Filters = append(r.Filters, pb.WatchCreateRequest_NODELETE)
		}
		ids[nextID] = l
		nextID++
		if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: r}}); err != nil {
			l.errorf("create: %v", err)
			return false
		}
		return true
	}
	for _, l := range logs {
		if !create(l) {
			return
		}
	}
	recv := make(chan *pb.WatchResponse, 16)
	go func() {
		defer close(recv)
		for {
			r, err := st.Recv()
			if err != nil {
				if sctx.Err() == nil {
					logs[0].errorf("recv: %v", err)
				}
				return
			}
			select {
			case recv <- r:
			case <-sctx.Done():
				return
			}
		}
	}()
	var progress int64
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ctx.Err() == nil; n++ {
		if f := finalRev.Load(); f != 0 && progress >= f {
			for _, l := range logs {
				l.done = progress
			}
			return
		}
		var r *pb.WatchResponse
		select {
		case r = <-recv:
			if r == nil {
				return
			}
		case <-tick.C:
			// etcd drops a progress request while a watcher is behind: ask
			// again until it is answered
			if finalRev.Load() != 0 {
				st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
			}
			continue
		case <-ctx.Done():
			return
		}
		switch {
		case r.WatchId == -1 && len(r.Events) == 0 && !r.Created:
			progress = r.Header.Revision
		case ids[r.WatchId] != nil:
			l := ids[r.WatchId]
			switch {
			case r.Created:
			case r.CompactRevision != 0:
				if r.CompactRevision <= l.next()-1 {
					l.errorf("compacted at %d after seeing %d", r.CompactRevision, l.next()-1)
				}
				l.gaps = append(l.gaps, [2]int64{l.next(), r.CompactRevision - 1})
				l.spec.start = r.CompactRevision
				l.resumes++
				delete(ids, r.WatchId)
				st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: r.WatchId}}})
				if !create(l) {
					return
				}
			case r.Canceled:
				l.errorf("canceled: %s", r.CancelReason)
			default:
				l.take(r.Events)
			}
		}
		if n%8 == 0 && finalRev.Load() == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
}

func checkWatchLog(t *testing.T, name string, l *watchLog, ref map[int64][]*mvccpb.Event, final, compactRev int64) {
	t.Helper()
	for _, e := range l.errs {
		t.Errorf("%s: %s", name, e)
	}
	if l.done < final {
		t.Errorf("%s: complete through %d only, final revision %d", name, l.done, final)
	}
	inGap := func(rev int64) bool {
		for _, g := range l.gaps {
			if rev >= g[0] && rev <= g[1] {
				return true
			}
		}
		return false
	}
	var want []*mvccpb.Event
	revs := make([]int64, 0, len(ref))
	for rev := range ref {
		revs = append(revs, rev)
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i] < revs[j] })
	for _, rev := range revs {
		if inGap(rev) {
			continue
		}
		for _, ev := range ref[rev] {
			if l.spec.matches(ev) {
				want = append(want, ev)
			}
		}
	}
	got := l.events
	n := min(len(got), len(want))
	for i := range n {
		g, w := got[i], want[i]
		ok := g.Type == w.Type && bytes.Equal(g.Kv.Key, w.Kv.Key) && g.Kv.ModRevision == w.Kv.ModRevision &&
			bytes.Equal(g.Kv.Value, w.Kv.Value) && g.Kv.CreateRevision == w.Kv.CreateRevision && g.Kv.Version == w.Kv.Version
		if ok && l.spec.prevKV {
			switch {
			case g.PrevKv == nil && w.PrevKv == nil:
			case g.PrevKv == nil && w.Kv.ModRevision <= compactRev:
				// etcd drops the previous value once compaction covers it
			case g.PrevKv == nil || w.PrevKv == nil:
				ok = false
			default:
				ok = bytes.Equal(g.PrevKv.Value, w.PrevKv.Value) && g.PrevKv.ModRevision == w.PrevKv.ModRevision && g.PrevKv.Version == w.PrevKv.Version
			}
		}
		if !ok {
			t.Errorf("%s: event %d differs:\n  got  %s\n  want %s", name, i, short(g), short(w))
			return
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: got %d events, want %d (first missing or extra at %d)", name, len(got), len(want), n)
	}
}
