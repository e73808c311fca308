package k8s

// Scenarios of our own: what kube-apiserver's etcd3 storage observes over
// metastore, asserted at the storage.Interface and at the wire where the
// apiserver depends on exact etcd behaviour (error identity for 410s,
// revisions of continue keys, progress notifications, lease expiry).

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/apis/example"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	"k8s.io/utils/clock"
)

func pod(ns, name string) *example.Pod {
	return &example.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func podKey(ns, name string) string { return "/pods/" + ns + "/" + name }

func mustCreate(ctx context.Context, t *testing.T, s storage.Interface, p *example.Pod, ttl uint64) *example.Pod {
	t.Helper()
	out := &example.Pod{}
	if err := s.Create(ctx, podKey(p.Namespace, p.Name), p, out, ttl); err != nil {
		t.Fatalf("Create %s/%s: %v", p.Namespace, p.Name, err)
	}
	return out
}

func rvOf(t *testing.T, obj metav1.Object) int64 {
	t.Helper()
	rv, err := strconv.ParseInt(obj.GetResourceVersion(), 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", obj.GetResourceVersion(), err)
	}
	return rv
}

func names(l *example.PodList) []string {
	var out []string
	for _, p := range l.Items {
		out = append(out, p.Name)
	}
	return out
}

// TestPagedListPinnedToFirstPage: a paged LIST reads every page at the first
// page's revision (the continue token carries it); the next page starts at
// lastKey+"\x00"; remainingItemCount comes from Range's count from the start
// key; writes made between pages are not seen.
func TestPagedListPinnedToFirstPage(t *testing.T) {
	ctx, e := setup(t)
	for i := range 25 {
		mustCreate(ctx, t, e.store, pod("ns", fmt.Sprintf("p%02d", i)), 0)
	}
	ctx = context.WithValue(ctx, storagetesting.RecorderContextKey, "paged")
	pred := storage.Everything
	pred.Limit = 10
	var all []string
	var rev string
	cont := ""
	for page := 0; ; page++ {
		out := &example.PodList{}
		opts := storage.ListOptions{Predicate: pred, Recursive: true}
		opts.Predicate.Continue = cont
		if err := e.store.GetList(ctx, "/pods/ns/", opts, out); err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		if page == 0 {
			rev = out.ResourceVersion
			if out.RemainingItemCount == nil || *out.RemainingItemCount != 15 {
				t.Errorf("first page remainingItemCount = %v, want 15", out.RemainingItemCount)
			}
			// Writes after the first page: a new object inside the range
			// and a deletion of one not yet listed.
			mustCreate(ctx, t, e.store, pod("ns", "p99"), 0)
			if err := e.store.Delete(ctx, podKey("ns", "p20"), &example.Pod{}, nil, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		} else if out.ResourceVersion != rev {
			t.Errorf("page %d at resourceVersion %s, want the first page's %s", page, out.ResourceVersion, rev)
		}
		// Range's count runs from the continue key, so the second page's
		// remainder is what follows it as of the first page's revision.
		if page == 1 && (out.RemainingItemCount == nil || *out.RemainingItemCount != 5) {
			t.Errorf("second page remainingItemCount = %v, want 5", out.RemainingItemCount)
		}
		all = append(all, names(out)...)
		cont = out.Continue
		if cont == "" {
			if out.RemainingItemCount != nil {
				t.Errorf("last page has remainingItemCount %d", *out.RemainingItemCount)
			}
			break
		}
		if page > 5 {
			t.Fatal("paging does not end")
		}
	}
	if len(all) != 25 || all[0] != "p00" || all[24] != "p24" {
		t.Errorf("paged list = %v, want p00..p24 as of the first page", all)
	}
	reqs := e.lists.ListRequestForKey("paged")
	if len(reqs) != 3 {
		t.Fatalf("Range requests = %+v, want 3", reqs)
	}
	firstRev, _ := strconv.ParseInt(rev, 10, 64)
	for i, r := range reqs[1:] {
		wantKey := fmt.Sprintf("/pods/ns/p%02d\x00", 10*(i+1)-1)
		if r.Revision != firstRev || r.Key != wantKey || r.Limit != 10 {
			t.Errorf("page %d request = %+v, want key %q at revision %d limit 10", i+1, r, wantKey, firstRev)
		}
	}
}

// TestConflictingUpdates: concurrent GuaranteedUpdates of one object (each a
// Txn comparing mod_revision, retried after the else-branch Get) lose no
// update, and the object's resourceVersion is the last write's revision.
func TestConflictingUpdates(t *testing.T) {
	ctx, e := setup(t)
	mustCreate(ctx, t, e.store, pod("ns", "counter"), 0)
	const workers, each = 8, 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]bool{}
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				out := &example.Pod{}
				err := e.store.GuaranteedUpdate(ctx, podKey("ns", "counter"), out, false, nil,
					storage.SimpleUpdate(func(obj runtime.Object) (runtime.Object, error) {
						p := obj.(*example.Pod)
						n, _ := strconv.Atoi(p.Annotations["n"])
						if p.Annotations == nil {
							p.Annotations = map[string]string{}
						}
						p.Annotations["n"] = strconv.Itoa(n + 1)
						return p, nil
					}), nil)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if seen[out.ResourceVersion] {
					errs <- fmt.Errorf("resourceVersion %s returned twice", out.ResourceVersion)
				}
				seen[out.ResourceVersion] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := &example.Pod{}
	if err := e.store.Get(ctx, podKey("ns", "counter"), storage.GetOptions{}, got); err != nil {
		t.Fatal(err)
	}
	if got.Annotations["n"] != strconv.Itoa(workers*each) {
		t.Errorf("counter = %s, want %d", got.Annotations["n"], workers*each)
	}
	resp, err := e.client.KV.Get(ctx, podKey("ns", "counter"))
	if err != nil {
		t.Fatal(err)
	}
	if kv := resp.Kvs[0]; kv.Version != workers*each+1 || strconv.FormatInt(kv.ModRevision, 10) != got.ResourceVersion {
		t.Errorf("stored version %d mod_revision %d, object resourceVersion %s; want version %d", kv.Version, kv.ModRevision, got.ResourceVersion, workers*each+1)
	}
}

// TestDeletePreconditions: UID and resourceVersion preconditions refuse a
// delete with the error the apiserver turns into 409 Conflict; a matching
// one deletes; deleting again is 404.
func TestDeletePreconditions(t *testing.T) {
	ctx, e := setup(t)
	p := pod("ns", "victim")
	p.UID = "uid-1"
	created := mustCreate(ctx, t, e.store, p, 0)
	key := podKey("ns", "victim")
	del := func(pre *storage.Preconditions) error {
		return e.store.Delete(ctx, key, &example.Pod{}, pre, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{})
	}
	wrongUID := types.UID("uid-2")
	if err := del(&storage.Preconditions{UID: &wrongUID}); !storage.IsInvalidObj(err) {
		t.Errorf("delete with a wrong UID: %v, want an invalid-object (409) error", err)
	}
	staleRV := strconv.FormatInt(rvOf(t, created)-1, 10)
	if err := del(&storage.Preconditions{ResourceVersion: &staleRV}); !storage.IsInvalidObj(err) {
		t.Errorf("delete with a stale resourceVersion: %v, want an invalid-object (409) error", err)
	}
	uid, rv := types.UID("uid-1"), created.ResourceVersion
	if err := del(&storage.Preconditions{UID: &uid, ResourceVersion: &rv}); err != nil {
		t.Fatalf("delete with matching preconditions: %v", err)
	}
	if err := e.store.Get(ctx, key, storage.GetOptions{}, &example.Pod{}); !storage.IsNotFound(err) {
		t.Errorf("Get after delete: %v, want not found", err)
	}
	if err := del(nil); !storage.IsNotFound(err) {
		t.Errorf("second delete: %v, want not found", err)
	}
}

// TestWatchFromRevision: the apiserver's watch (WithRequireLeader, prev_kv,
// from resourceVersion+1) replays history in order with the previous object
// on DELETED events, then follows live writes.
func TestWatchFromRevision(t *testing.T) {
	ctx, e := setup(t)
	a := mustCreate(ctx, t, e.store, pod("ns", "a"), 0)
	start := a.ResourceVersion
	mustCreate(ctx, t, e.store, pod("ns", "b"), 0)
	upd := &example.Pod{}
	if err := e.store.GuaranteedUpdate(ctx, podKey("ns", "a"), upd, false, nil, storage.SimpleUpdate(func(obj runtime.Object) (runtime.Object, error) {
		obj.(*example.Pod).Labels = map[string]string{"x": "1"}
		return obj, nil
	}), nil); err != nil {
		t.Fatal(err)
	}
	w, err := e.store.Watch(ctx, "/pods/ns/", storage.ListOptions{ResourceVersion: start, Predicate: storage.Everything, Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	delOut := &example.Pod{}
	if err := e.store.Delete(ctx, podKey("ns", "b"), delOut, nil, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ  watch.EventType
		name string
	}{{watch.Added, "b"}, {watch.Modified, "a"}, {watch.Deleted, "b"}}
	last := rvOf(t, a)
	for i, wnt := range want {
		select {
		case ev := <-w.ResultChan():
			p, ok := ev.Object.(*example.Pod)
			if !ok || ev.Type != wnt.typ || p.Name != wnt.name {
				t.Fatalf("event %d = %s %#v, want %s %s", i, ev.Type, ev.Object, wnt.typ, wnt.name)
			}
			rv := rvOf(t, p)
			if rv <= last {
				t.Errorf("event %d at resourceVersion %d, not after %d", i, rv, last)
			}
			last = rv
			if wnt.typ == watch.Modified && p.Labels["x"] != "1" {
				t.Errorf("MODIFIED event lacks the update: %#v", p)
			}
			// A DELETED event carries the deleted object (from prev_kv) at
			// the deletion's revision.
			if wnt.typ == watch.Deleted && p.ResourceVersion != delOut.ResourceVersion {
				t.Errorf("DELETED event resourceVersion %s, want the deletion's %s", p.ResourceVersion, delOut.ResourceVersion)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event %d (%s %s)", i, wnt.typ, wnt.name)
		}
	}

	// The same at the wire: the watch the apiserver opens.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := e.client.Watch(wctx, "/pods/ns/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(rvOf(t, a)+1))
	var evs []*clientv3.Event
	for len(evs) < 3 {
		select {
		case resp := <-wch:
			if err := resp.Err(); err != nil {
				t.Fatal(err)
			}
			evs = append(evs, resp.Events...)
		case <-time.After(10 * time.Second):
			t.Fatalf("raw watch: %d events", len(evs))
		}
	}
	if evs[0].PrevKv != nil || evs[1].PrevKv == nil || evs[2].PrevKv == nil || evs[2].Type != clientv3.EventTypeDelete {
		t.Errorf("prev_kv: create %v, update %v, delete %v (type %v); want none, set, set", evs[0].PrevKv, evs[1].PrevKv, evs[2].PrevKv, evs[2].Type)
	}
}

// TestProgressRequest: the watch cache's consistent reads wait for the watch
// to reach the current revision; when the writes were elsewhere, only a
// progress notification answering RequestWatchProgress brings it there. The
// apiserver sees it as a bookmark at the current revision.
func TestProgressRequest(t *testing.T) {
	ctx, e := setup(t)
	created := mustCreate(ctx, t, e.store, pod("ns", "a"), 0)
	pred := storage.Everything
	pred.AllowWatchBookmarks = true
	w, err := e.store.Watch(ctx, "/pods/", storage.ListOptions{ResourceVersion: created.ResourceVersion, Predicate: pred, Recursive: true, ProgressNotify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for round := range 3 {
		rev := e.increaseRV()(ctx, t)
		deadline := time.After(10 * time.Second)
		for got := false; !got; {
			if err := e.store.RequestWatchProgress(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case ev := <-w.ResultChan():
				if ev.Type != watch.Bookmark {
					t.Fatalf("round %d: unexpected event %s %#v", round, ev.Type, ev.Object)
				}
				if rv := rvOf(t, ev.Object.(*example.Pod)); rv == rev {
					got = true
				} else if rv > rev {
					t.Fatalf("round %d: bookmark at %d, beyond the store's %d", round, rv, rev)
				}
			case <-time.After(200 * time.Millisecond):
			case <-deadline:
				t.Fatalf("round %d: no bookmark at revision %d", round, rev)
			}
		}
	}
}

// TestCompactionAndGone: the apiserver's own compactor (a Txn on
// compact_rev_key each interval, then Compact of the revision it saw the
// interval before) compacts metastore, and what was read at older revisions
// turns into 410 Gone: LIST at an exact old resourceVersion, the next page
// of a paged LIST, a WATCH from an old resourceVersion. At the wire, etcd's
// exact ErrCompacted is what the apiserver matches.
func TestCompactionAndGone(t *testing.T) {
	t.Parallel() // waits; sets no feature gate
	ctx, e := setup(t)
	first := mustCreate(ctx, t, e.store, pod("ns", "a"), 0)
	mustCreate(ctx, t, e.store, pod("ns", "b"), 0)
	old := first.ResourceVersion
	pred := storage.Everything
	pred.Limit = 1
	page := &example.PodList{}
	if err := e.store.GetList(ctx, "/pods/", storage.ListOptions{Predicate: pred, Recursive: true}, page); err != nil || page.Continue == "" {
		t.Fatalf("first page: %v, continue %q", err, page.Continue)
	}
	for i := range 5 {
		mustCreate(ctx, t, e.store, pod("ns", fmt.Sprintf("later%d", i)), 0)
	}

	compactor := etcd3.NewCompactor(e.client.Client, 300*time.Millisecond, clock.RealClock{}, nil)
	defer compactor.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for compactor.CompactRevision() <= rvOf(t, first) {
		if time.Now().After(deadline) {
			t.Fatalf("the compactor did not compact past %s (at %d)", old, compactor.CompactRevision())
		}
		mustCreate(ctx, t, e.store, pod("tick", strconv.FormatInt(time.Now().UnixNano(), 10)), 0)
		time.Sleep(100 * time.Millisecond)
	}
	kv, err := e.client.KV.Get(ctx, "compact_rev_key")
	if err != nil || len(kv.Kvs) != 1 || kv.Kvs[0].Version < 2 {
		t.Fatalf("compact_rev_key: %v %v, want a key written at least twice", kv, err)
	}

	gone := func(what string, err error, msg string) {
		t.Helper()
		status, ok := err.(apierrors.APIStatus)
		if !apierrors.IsResourceExpired(err) || !ok || status.Status().Code != http.StatusGone {
			t.Errorf("%s: %v, want 410 Gone (ResourceExpired)", what, err)
			return
		}
		if !strings.HasPrefix(status.Status().Message, msg) {
			t.Errorf("%s: message %q, want %q", what, status.Status().Message, msg)
		}
	}
	err = e.store.GetList(ctx, "/pods/", storage.ListOptions{ResourceVersion: old, ResourceVersionMatch: metav1.ResourceVersionMatchExact, Predicate: storage.Everything, Recursive: true}, &example.PodList{})
	gone("LIST at a compacted resourceVersion", err, "The resourceVersion for the provided list is too old.")
	next := storage.ListOptions{Predicate: pred, Recursive: true}
	next.Predicate.Continue = page.Continue
	err = e.store.GetList(ctx, "/pods/", next, &example.PodList{})
	gone("LIST continue at a compacted revision", err, "The provided continue parameter is too old")

	w, err := e.store.Watch(ctx, "/pods/", storage.ListOptions{ResourceVersion: old, Predicate: storage.Everything, Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		st, ok := ev.Object.(*metav1.Status)
		if ev.Type != watch.Error || !ok || st.Code != http.StatusGone || st.Reason != metav1.StatusReasonExpired || st.Message != "The resourceVersion for the provided watch is too old." {
			t.Errorf("WATCH from a compacted resourceVersion: %s %#v, want an ERROR event with 410 Expired", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Error("WATCH from a compacted resourceVersion: no event")
	}
	w.Stop()

	// At the wire: the same errors the apiserver matches by identity.
	if _, err := e.client.KV.Get(ctx, "/pods/", clientv3.WithPrefix(), clientv3.WithRev(rvOf(t, first))); err != rpctypes.ErrCompacted {
		t.Errorf("Range at a compacted revision: %v, want rpctypes.ErrCompacted", err)
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	resp := <-e.client.Watch(wctx, "/pods/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(rvOf(t, first)))
	if resp.Err() != rpctypes.ErrCompacted || resp.CompactRevision < rvOf(t, first) {
		t.Errorf("watch from a compacted revision: err %v, compact_revision %d", resp.Err(), resp.CompactRevision)
	}
}

// TestEventLeases: the lease manager attaches events created within the
// reuse window to one lease (TTL + reuse seconds, never renewed), and lease
// expiry deletes every key on it in one revision, which watchers see as
// DELETED events.
func TestEventLeases(t *testing.T) {
	t.Parallel() // waits; sets no feature gate
	ctx, e := setup(t)
	// Reuse: 5% of a 20s TTL is the 1s reuse window of the test config.
	var leases = map[int64]bool{}
	for i := range 4 {
		mustCreate(ctx, t, e.store, pod("events", fmt.Sprintf("long%d", i)), 20)
	}
	for i := range 4 {
		resp, err := e.client.KV.Get(ctx, podKey("events", fmt.Sprintf("long%d", i)))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatal(resp, err)
		}
		leases[resp.Kvs[0].Lease] = true
	}
	if len(leases) != 1 {
		t.Errorf("4 events created together are on %d leases, want 1 reused lease", len(leases))
	}
	for id := range leases {
		ttl, err := e.client.TimeToLive(ctx, clientv3.LeaseID(id), clientv3.WithAttachedKeys())
		if err != nil {
			t.Fatal(err)
		}
		if ttl.GrantedTTL != 21 || len(ttl.Keys) != 4 {
			t.Errorf("lease granted %ds with %d keys, want 21s (20 + 1 reuse) and 4 keys", ttl.GrantedTTL, len(ttl.Keys))
		}
	}

	// Expiry: events with the shortest TTL metastore grants (2s, as etcd's
	// minimum); several keys on one lease, as with reuse, go in one revision.
	now := &example.Pod{}
	if err := e.store.Get(ctx, podKey("events", "long0"), storage.GetOptions{}, now); err != nil {
		t.Fatal(err)
	}
	w, err := e.store.Watch(ctx, "/pods/short/", storage.ListOptions{ResourceVersion: now.ResourceVersion, Predicate: storage.Everything, Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	mustCreate(ctx, t, e.store, pod("short", "own-lease"), 2)
	lease, err := e.client.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := e.client.KV.Put(ctx, podKey("short", fmt.Sprintf("shared%d", i)), valuePrefix+`{"kind":"Pod","apiVersion":"example.apiserver.k8s.io/v1","metadata":{"name":"shared`+strconv.Itoa(i)+`","namespace":"short"}}`, clientv3.WithLease(lease.ID)); err != nil {
			t.Fatal(err)
		}
	}
	added, deleted := 0, map[string]int64{}
	timeout := time.After(15 * time.Second)
	for len(deleted) < 4 {
		select {
		case ev := <-w.ResultChan():
			p, ok := ev.Object.(*example.Pod)
			if !ok {
				t.Fatalf("event %s %#v", ev.Type, ev.Object)
			}
			switch ev.Type {
			case watch.Added:
				added++
			case watch.Deleted:
				deleted[p.Name] = rvOf(t, p)
			default:
				t.Fatalf("unexpected %s of %s", ev.Type, p.Name)
			}
		case <-timeout:
			t.Fatalf("after 15s: %d added, deleted %v; want 4 keys deleted by lease expiry", added, deleted)
		}
	}
	if added != 4 {
		t.Errorf("%d ADDED events, want 4", added)
	}
	if deleted["shared0"] != deleted["shared1"] || deleted["shared1"] != deleted["shared2"] {
		t.Errorf("keys of one lease deleted at revisions %v, want one revision", deleted)
	}
	resp, err := e.client.KV.Get(ctx, "/pods/short/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Errorf("keys left after expiry: %v %v", resp, err)
	}
}

// TestFactoryHealthStatsAndDBSize goes through the apiserver's storage
// factory (storagebackend/factory, the path kube-apiserver takes): its
// health check (a Range on <prefix>/health), its monitor (Status for the
// db-size metric) and the object count (a count_only Range).
func TestFactoryHealthStatsAndDBSize(t *testing.T) {
	t.Parallel() // waits; sets no feature gate
	s := startMetastore(t)
	cfg := storagebackend.Config{
		Type:               storagebackend.StorageTypeETCD3,
		Prefix:             "/registry",
		Transport:          storagebackend.TransportConfig{ServerList: []string{"http://" + s.Endpoint}},
		Codec:              setupCodec(),
		Transformer:        identity.NewEncryptCheckTransformer(),
		HealthcheckTimeout: 5 * time.Second,
		ReadycheckTimeout:  5 * time.Second,
		LeaseManagerConfig: etcd3.NewDefaultLeaseManagerConfig(),
	}
	stop := make(chan struct{})
	defer close(stop)
	health, err := factory.CreateHealthCheck(cfg, stop)
	if err != nil {
		t.Fatal(err)
	}
	ready, err := factory.CreateReadyCheck(cfg, stop)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for health() != nil || ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("health %v, ready %v", health(), ready())
		}
		time.Sleep(200 * time.Millisecond)
	}
	st, destroy, err := factory.Create(*cfg.ForResource(schema.GroupResource{Resource: "pods"}),
		func() runtime.Object { return &example.Pod{} }, func() runtime.Object { return &example.PodList{} }, "/pods")
	if err != nil {
		t.Fatal(err)
	}
	defer destroy()
	ctx := t.Context()
	for i := range 7 {
		mustCreate(ctx, t, st, pod("ns", fmt.Sprintf("p%d", i)), 0)
	}
	stats, err := st.Stats(ctx)
	if err != nil || stats.ObjectCount != 7 {
		t.Errorf("Stats = %+v, %v; want 7 objects", stats, err)
	}
	got := &example.Pod{}
	if err := st.Get(ctx, "/pods/ns/p3", storage.GetOptions{}, got); err != nil || got.Name != "p3" {
		t.Errorf("Get through the factory's store: %v %v", got, err)
	}
	mon, err := factory.CreateMonitor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	m, err := mon.Monitor(ctx)
	if err != nil || m.Size <= 0 {
		t.Errorf("Monitor = %+v, %v; want the db size", m, err)
	}
	prober, err := factory.CreateProber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prober.Close()
	if err := prober.Probe(ctx); err != nil {
		t.Errorf("Probe: %v", err)
	}
}

// TestGetCurrentResourceVersion (upstream's test of the same name): the
// store's current resourceVersion, which the watch cache's consistent reads
// wait for, is the header revision of a Range on the resource prefix: it
// moves with writes anywhere, and objects keep their own.
func TestGetCurrentResourceVersion(t *testing.T) {
	ctx, e := setup(t)
	created := mustCreate(ctx, t, e.store, pod("ns", "pod-1"), 0)
	cur, err := e.store.GetCurrentResourceVersion(ctx)
	if err != nil || int64(cur) != rvOf(t, created) {
		t.Fatalf("GetCurrentResourceVersion = %d, %v; want the pod's %s", cur, err, created.ResourceVersion)
	}
	resp, err := e.client.KV.Put(ctx, "compact_rev_key", created.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	if cur, err = e.store.GetCurrentResourceVersion(ctx); err != nil || int64(cur) != resp.Header.Revision {
		t.Errorf("after an unrelated write: %d, %v; want %d", cur, err, resp.Header.Revision)
	}
	got := &example.Pod{}
	if err := e.store.Get(ctx, podKey("ns", "pod-1"), storage.GetOptions{}, got); err != nil || got.ResourceVersion != created.ResourceVersion {
		t.Errorf("pod resourceVersion %s, %v; want unchanged %s", got.ResourceVersion, err, created.ResourceVersion)
	}
}
