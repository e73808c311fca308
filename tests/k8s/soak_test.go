package k8s

// A kube-apiserver-like workload against one metastore, for a configurable
// time (make soak-k8s): several resources under /registry/<resource>/<ns>/
// <name>, each with its own etcd3 store, writers creating, updating and
// deleting small objects, events created with TTLs on reused leases (never
// renewed, deleted by expiry), a watch on every resource prefix, paged lists,
// and the apiserver's compactor. At the end each watcher's view is checked:
// every acknowledged write exactly once and in revision order, nothing else
// but lease-expiry deletions of events, the replayed state equal to every
// paged list taken at its revision and to the store's final state.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/apis/example"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	"k8s.io/utils/clock"
)

const (
	soakEnv         = "METASTORE_K8S_SOAK"          // run the soak at all
	soakDurationEnv = "METASTORE_K8S_SOAK_DURATION" // how long writers run (default 2m)
	soakCompactEnv  = "METASTORE_K8S_SOAK_COMPACT"  // compactor interval (default 10s)
)

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// soakEvent is one change of one object as a writer acknowledged it or a
// watcher saw it.
type soakEvent struct {
	rev  int64
	key  string // ns/name
	typ  watch.EventType
	gen  string // the object's "gen" label: which write produced it
	lost bool   // a writer got an error: the write may or may not have happened
}

type listSnap struct {
	rev   int64
	items map[string]string // key -> gen
}

type soakResource struct {
	name   string
	events bool // objects carry TTLs and vanish by lease expiry
	store  storage.Interface

	mu    sync.Mutex
	acks  []soakEvent
	lists []listSnap

	seen       []soakEvent // the watcher's events, in arrival order
	lastRV     atomic.Int64
	watchErr   atomic.Value
	pages      atomic.Int64
	expiredCnt atomic.Int64 // continues refused with 410 after a compaction
}

func (r *soakResource) ack(ev soakEvent) {
	r.mu.Lock()
	r.acks = append(r.acks, ev)
	r.mu.Unlock()
}

func TestSoakKubeWorkload(t *testing.T) {
	if v := os.Getenv(soakEnv); v == "" || v == "0" {
		t.Skipf("soak: set %s=1 (make soak-k8s); %s sets the duration", soakEnv, soakDurationEnv)
	}
	duration := envDuration(t, soakDurationEnv, 2*time.Minute)
	compactEvery := envDuration(t, soakCompactEnv, 10*time.Second)
	srv := startMetastore(t)
	client := newClient(t, srv.Endpoint)
	ctx := context.Background()
	codec := setupCodec()
	versioner := storage.APIObjectVersioner{}
	lc := etcd3.NewDefaultLeaseManagerConfig()

	compactor := etcd3.NewCompactor(client.Client, compactEvery, clock.RealClock{}, nil)
	defer compactor.Stop()

	var resources []*soakResource
	for _, name := range []string{"pods", "configmaps", "secrets", "services", "endpointslices", "events"} {
		s, err := etcd3.New(client, compactor, codec,
			func() runtime.Object { return &example.Pod{} }, func() runtime.Object { return &example.PodList{} },
			"/registry", "/"+name+"/", schema.GroupResource{Resource: name},
			identity.NewEncryptCheckTransformer(), lc, etcd3.NewDefaultDecoder(codec, versioner), versioner)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		resources = append(resources, &soakResource{name: name, events: name == "events", store: s})
	}

	start, err := client.KV.Put(ctx, "/registry/soak-start", "x")
	if err != nil {
		t.Fatal(err)
	}
	startRV := strconv.FormatInt(start.Header.Revision, 10)

	// Watchers: one per resource prefix from the start revision, with
	// bookmarks so progress requests can tell them the store's revision.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var watchers sync.WaitGroup
	for _, r := range resources {
		pred := storage.Everything
		pred.AllowWatchBookmarks = true
		w, err := r.store.Watch(wctx, "/"+r.name+"/", storage.ListOptions{ResourceVersion: startRV, Predicate: pred, Recursive: true, ProgressNotify: true})
		if err != nil {
			t.Fatal(err)
		}
		r.lastRV.Store(start.Header.Revision)
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			defer w.Stop()
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					r.watchErr.Store(fmt.Sprintf("%#v", ev.Object))
					return
				}
				p, ok := ev.Object.(*example.Pod)
				if !ok {
					r.watchErr.Store(fmt.Sprintf("unexpected object %T", ev.Object))
					return
				}
				rv, _ := strconv.ParseInt(p.ResourceVersion, 10, 64)
				if ev.Type != watch.Bookmark {
					r.seen = append(r.seen, soakEvent{rev: rv, key: p.Namespace + "/" + p.Name, typ: ev.Type, gen: p.Labels["gen"]})
				}
				r.lastRV.Store(rv)
			}
		}()
	}

	deadline := time.Now().Add(duration)
	var work sync.WaitGroup
	var ops, conflicts, lost atomic.Int64
	var gen atomic.Int64
	for _, r := range resources {
		writers := 2
		for wi := range writers {
			work.Add(1)
			go func() {
				defer work.Done()
				rng := rand.New(rand.NewPCG(uint64(wi), uint64(len(r.name))))
				for n := 0; time.Now().Before(deadline); n++ {
					ns := fmt.Sprintf("ns%d", rng.IntN(8))
					g := strconv.FormatInt(gen.Add(1), 10)
					ops.Add(1)
					if r.events {
						name := fmt.Sprintf("ev-%d-%d", wi, n)
						p := &example.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"gen": g}}}
						out := &example.Pod{}
						// 20s: 1s of lease reuse, so events share leases.
						if err := r.store.Create(ctx, "/"+r.name+"/"+ns+"/"+name, p, out, 20); err != nil {
							lost.Add(1)
							r.ack(soakEvent{key: ns + "/" + name, gen: g, lost: true})
							continue
						}
						r.ack(soakEvent{rev: revOf(out), key: ns + "/" + name, typ: watch.Added, gen: g})
						continue
					}
					name := fmt.Sprintf("obj%03d", rng.IntN(60))
					key := "/" + r.name + "/" + ns + "/" + name
					out := &example.Pod{}
					switch op := rng.IntN(10); {
					case op < 5:
						p := &example.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"gen": g}}}
						err := r.store.Create(ctx, key, p, out, 0)
						if err == nil {
							r.ack(soakEvent{rev: revOf(out), key: ns + "/" + name, typ: watch.Added, gen: g})
							continue
						}
						if !storage.IsExist(err) {
							lost.Add(1)
							r.ack(soakEvent{key: ns + "/" + name, gen: g, lost: true})
							continue
						}
						conflicts.Add(1)
						fallthrough
					case op < 8:
						err := r.store.GuaranteedUpdate(ctx, key, out, false, nil, storage.SimpleUpdate(func(obj runtime.Object) (runtime.Object, error) {
							obj.(*example.Pod).Labels = map[string]string{"gen": g}
							return obj, nil
						}), nil)
						switch {
						case err == nil:
							r.ack(soakEvent{rev: revOf(out), key: ns + "/" + name, typ: watch.Modified, gen: g})
						case storage.IsNotFound(err):
							conflicts.Add(1)
						default:
							lost.Add(1)
							r.ack(soakEvent{key: ns + "/" + name, gen: g, lost: true})
						}
					default:
						err := r.store.Delete(ctx, key, out, nil, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{})
						switch {
						case err == nil:
							r.ack(soakEvent{rev: revOf(out), key: ns + "/" + name, typ: watch.Deleted, gen: out.Labels["gen"]})
						case storage.IsNotFound(err):
							conflicts.Add(1)
						default:
							lost.Add(1)
							r.ack(soakEvent{key: ns + "/" + name, lost: true})
						}
					}
				}
			}()
		}
		// A lister per resource: paged lists (limit 25) from the latest
		// revision, every page pinned to the first's. Every tenth list is a
		// slow client that waits two compaction intervals between pages:
		// its continue token must then be refused with 410 Gone.
		work.Add(1)
		go func() {
			defer work.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				var pause time.Duration
				if n%10 == 9 {
					pause = 2*compactEvery + time.Second
				}
				snap, err := pagedList(ctx, r, 25, pause)
				if err != nil {
					if apierrors.IsResourceExpired(err) {
						r.expiredCnt.Add(1)
						continue
					}
					t.Errorf("%s: paged list: %v", r.name, err)
					return
				}
				r.mu.Lock()
				r.lists = append(r.lists, snap)
				r.mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	work.Wait()

	// Quiesce: the store's revision now, and every watcher brought there by
	// progress requests.
	end, err := client.KV.Put(ctx, "/registry/soak-end", "x")
	if err != nil {
		t.Fatal(err)
	}
	endRev := end.Header.Revision
	for _, r := range resources {
		until := time.Now().Add(30 * time.Second)
		for r.lastRV.Load() < endRev && r.watchErr.Load() == nil {
			if time.Now().After(until) {
				t.Fatalf("%s: watcher stuck at %d, store at %d", r.name, r.lastRV.Load(), endRev)
			}
			if err := r.store.RequestWatchProgress(ctx); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	stopWatch()
	watchers.Wait()

	totalEvents, totalLists, totalPages, expired, expiredEvents := 0, 0, int64(0), int64(0), 0
	for _, r := range resources {
		if v := r.watchErr.Load(); v != nil {
			t.Errorf("%s: watch ended with an error: %v", r.name, v)
			continue
		}
		final := &example.PodList{}
		if err := r.store.GetList(ctx, "/"+r.name+"/", storage.ListOptions{ResourceVersion: strconv.FormatInt(endRev, 10), ResourceVersionMatch: metav1.ResourceVersionMatchExact, Predicate: storage.Everything, Recursive: true}, final); err != nil {
			t.Fatalf("%s: final list: %v", r.name, err)
		}
		expiredEvents += checkWatcher(t, r, endRev, final)
		totalEvents += len(r.seen)
		totalLists += len(r.lists)
		totalPages += r.pages.Load()
		expired += r.expiredCnt.Load()
	}
	st, err := client.Status(ctx, srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	leases, err := client.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("soak %v (compaction every %v): %d writes (%.0f/s; %d conflicts, %d with errors), %d watch events checked over %d watchers, %d event objects deleted by lease expiry, %d paged lists (%d pages, %d continues refused with 410 after compaction), final revision %d, compacted at %d, db size %d bytes, %d live leases",
		duration, compactEvery, ops.Load(), float64(ops.Load())/duration.Seconds(), conflicts.Load(), lost.Load(),
		totalEvents, len(resources), expiredEvents, totalLists, totalPages, expired, endRev, compactor.CompactRevision(), st.DbSize, len(leases.Leases))
	if duration >= 3*compactEvery && compactor.CompactRevision() == 0 {
		t.Error("the compactor never compacted")
	}
	if duration >= 40*compactEvery && expired == 0 {
		t.Error("no slow paged list was refused with 410 Gone after compaction")
	}
}

// revOf is a written object's resourceVersion (writers run outside the
// test goroutine, where t.Fatal must not be called; the store always sets a
// numeric one).
func revOf(obj metav1.Object) int64 {
	rv, _ := strconv.ParseInt(obj.GetResourceVersion(), 10, 64)
	return rv
}

// pagedList lists a resource in pages of limit from the latest revision,
// waiting pause between pages.
func pagedList(ctx context.Context, r *soakResource, limit int64, pause time.Duration) (listSnap, error) {
	snap := listSnap{items: map[string]string{}}
	pred := storage.Everything
	pred.Limit = limit
	cont := ""
	var prev string
	for {
		out := &example.PodList{}
		opts := storage.ListOptions{Predicate: pred, Recursive: true}
		opts.Predicate.Continue = cont
		if err := r.store.GetList(ctx, "/"+r.name+"/", opts, out); err != nil {
			return snap, err
		}
		r.pages.Add(1)
		rv, _ := strconv.ParseInt(out.ResourceVersion, 10, 64)
		if snap.rev == 0 {
			snap.rev = rv
		} else if rv != snap.rev {
			return snap, fmt.Errorf("page at revision %d, first page at %d", rv, snap.rev)
		}
		for _, p := range out.Items {
			k := p.Namespace + "/" + p.Name
			if k <= prev {
				return snap, fmt.Errorf("key %s after %s", k, prev)
			}
			prev = k
			snap.items[k] = p.Labels["gen"]
		}
		if cont = out.Continue; cont == "" {
			return snap, nil
		}
		time.Sleep(pause)
	}
}

// checkWatcher checks one resource's watch stream against its acknowledged
// writes, its paged lists and its final state; it returns the number of
// lease-expiry deletions seen.
func checkWatcher(t *testing.T, r *soakResource, endRev int64, final *example.PodList) int {
	t.Helper()
	// In revision order; several keys only when one lease's expiry deleted
	// them together.
	for i := 1; i < len(r.seen); i++ {
		a, b := r.seen[i-1], r.seen[i]
		if b.rev < a.rev || (b.rev == a.rev && !(r.events && a.typ == watch.Deleted && b.typ == watch.Deleted && a.key != b.key)) {
			t.Errorf("%s: event %d (%+v) after %+v: out of order or repeated", r.name, i, b, a)
			return 0
		}
	}
	type id struct {
		rev int64
		key string
	}
	seen := map[id]soakEvent{}
	for _, ev := range r.seen {
		seen[id{ev.rev, ev.key}] = ev
	}
	maybe := map[string]bool{} // keys with a write of unknown outcome
	for _, a := range r.acks {
		if a.lost {
			maybe[a.key] = true
			continue
		}
		ev, ok := seen[id{a.rev, a.key}]
		if !ok || ev.typ != a.typ || ev.gen != a.gen {
			t.Errorf("%s: acknowledged %s %s at %d (gen %s) not seen by the watcher (saw %+v)", r.name, a.typ, a.key, a.rev, a.gen, ev)
			continue
		}
		delete(seen, id{a.rev, a.key})
	}
	// What is left must be lease expiry of events (or writes whose
	// acknowledgement was lost).
	expiries := 0
	for _, ev := range seen {
		switch {
		case r.events && ev.typ == watch.Deleted:
			expiries++
		case maybe[ev.key]:
		default:
			t.Errorf("%s: the watcher saw %s %s at %d (gen %s), which no writer made", r.name, ev.typ, ev.key, ev.rev, ev.gen)
		}
	}

	// Replaying the stream gives the state at any revision: it must equal
	// every paged list at its revision, and the final list.
	sort.Slice(r.lists, func(i, j int) bool { return r.lists[i].rev < r.lists[j].rev })
	state := map[string]string{}
	i := 0
	check := func(rev int64, items map[string]string, what string) {
		for ; i < len(r.seen) && r.seen[i].rev <= rev; i++ {
			ev := r.seen[i]
			if ev.typ == watch.Deleted {
				if _, ok := state[ev.key]; !ok {
					t.Errorf("%s: DELETED %s at %d of an object the stream never had", r.name, ev.key, ev.rev)
				}
				delete(state, ev.key)
				continue
			}
			if _, ok := state[ev.key]; ok == (ev.typ == watch.Added) {
				t.Errorf("%s: %s %s at %d contradicts the stream before it", r.name, ev.typ, ev.key, ev.rev)
			}
			state[ev.key] = ev.gen
		}
		if !mapsEqual(state, items) {
			t.Errorf("%s: %s at revision %d differs from the watcher's view: list %d objects, watcher %d (%s)", r.name, what, rev, len(items), len(state), diffKeys(state, items))
		}
	}
	for _, l := range r.lists {
		check(l.rev, l.items, "paged list")
	}
	fin := map[string]string{}
	for _, p := range final.Items {
		fin[p.Namespace+"/"+p.Name] = p.Labels["gen"]
	}
	check(endRev, fin, "final state")
	// Writers had stopped; only leases can still have expired since.
	for _, ev := range r.seen[i:] {
		if !r.events || ev.typ != watch.Deleted {
			t.Errorf("%s: %s %s at %d, after the writers stopped at %d", r.name, ev.typ, ev.key, ev.rev, endRev)
		}
	}
	return expiries
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func diffKeys(watcher, list map[string]string) string {
	var d []string
	for k, v := range watcher {
		if w, ok := list[k]; !ok || w != v {
			d = append(d, "watcher:"+k+"="+v)
		}
	}
	for k, v := range list {
		if w, ok := watcher[k]; !ok || w != v {
			d = append(d, "list:"+k+"="+v)
		}
	}
	slices.Sort(d)
	if len(d) > 6 {
		d = append(d[:6], "…")
	}
	return fmt.Sprint(d)
}
