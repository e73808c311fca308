package k8s

// The watch cache (k8s.io/apiserver/pkg/storage/cacher) over the etcd3 store
// over metastore, as kube-apiserver stacks them. Its consistent reads and
// WatchList depend on progress requests: the cache serves a LIST without
// resourceVersion only after its watch has reached etcd's current revision,
// which, when the writes were to other resources, only a progress
// notification tells it.

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/example"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/cacher"
	cachermetrics "k8s.io/apiserver/pkg/storage/cacher/metrics"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
	"k8s.io/component-base/metrics/testutil"
	"k8s.io/utils/clock"
)

// countingStore counts the LISTs that reach etcd.
type countingStore struct {
	storage.Interface
	lists atomic.Int64
}

func (c *countingStore) GetList(ctx context.Context, key string, opts storage.ListOptions, listObj runtime.Object) error {
	c.lists.Add(1)
	return c.Interface.GetList(ctx, key, opts, listObj)
}

func podAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	p, ok := obj.(*example.Pod)
	if !ok {
		return storage.DefaultNamespaceScopedAttr(obj)
	}
	l, f, err := storage.DefaultNamespaceScopedAttr(obj)
	if err != nil {
		return nil, nil, err
	}
	f["spec.nodeName"] = p.Spec.NodeName
	return l, f, nil
}

// setupCacher builds the watch cache and its delegator over a fresh env, as
// upstream's cacher tests do, and waits until the cache is ready.
func setupCacher(t *testing.T) (context.Context, *cacher.CacheDelegator, *env, *countingStore) {
	ctx, e := setup(t)
	cs := &countingStore{Interface: e.store}
	c, err := cacher.NewCacherFromConfig(cacher.Config{
		Storage:             cs,
		Versioner:           storage.APIObjectVersioner{},
		GroupResource:       schema.GroupResource{Resource: "pods"},
		EventsHistoryWindow: cacher.DefaultEventFreshDuration,
		ResourcePrefix:      "/pods/",
		KeyFunc:             func(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc("/pods/", obj) },
		GetAttrsFunc:        podAttrs,
		NewFunc:             func() runtime.Object { return &example.Pod{} },
		NewListFunc:         func() runtime.Object { return &example.PodList{} },
		Codec:               e.codec,
		Clock:               clock.RealClock{},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	d := cacher.NewCacheDelegator(c, cs)
	t.Cleanup(func() {
		d.Stop()
		c.Stop()
	})
	return ctx, d, e, cs
}

// TestCacherConsistentListUsesProgress: LIST without resourceVersion is
// served by the cache at etcd's current revision even when that revision
// was made by a write the cache's watch never sees: metastore answers the
// cache's progress request. Neither a LIST to etcd nor the fallback happens.
func TestCacherConsistentListUsesProgress(t *testing.T) {
	cachermetrics.Register()
	ctx, d, e, cs := setupCacher(t)
	mustCreate(ctx, t, d, pod("ns", "a"), 0)
	before := cs.lists.Load()
	served := func(fallback string) float64 {
		v, _ := testutil.GetCounterMetricValue(cachermetrics.ConsistentReadTotal.WithLabelValues("", "pods", "true", fallback))
		return v
	}
	okBefore, fbBefore := served("false"), served("true")
	for round := range 3 {
		rev := e.increaseRV()(ctx, t) // elsewhere: the cache's watch on /pods/ sees nothing
		start := time.Now()
		out := &example.PodList{}
		if err := d.GetList(ctx, "/pods/", storage.ListOptions{Predicate: storage.Everything, Recursive: true}, out); err != nil {
			t.Fatal(err)
		}
		if out.ResourceVersion != strconv.FormatInt(rev, 10) || len(out.Items) != 1 {
			t.Fatalf("round %d: consistent list at %s with %d items, want revision %d and 1 item", round, out.ResourceVersion, len(out.Items), rev)
		}
		t.Logf("round %d: consistent list served by the cache in %v", round, time.Since(start))
	}
	if n := cs.lists.Load() - before; n != 0 {
		t.Errorf("%d LISTs went to etcd, want every consistent list served by the cache", n)
	}
	if ok, fb := served("false")-okBefore, served("true")-fbBefore; ok != 3 || fb != 0 {
		t.Errorf("consistent reads: %v served by the cache, %v fallbacks; want 3 and 0", ok, fb)
	}
}

// cacheCreateWrapper waits after each Create until the cache holds the
// object, as upstream's createWrapper does for the WatchList tests.
type cacheCreateWrapper struct {
	*cacher.CacheDelegator
}

func (c *cacheCreateWrapper) Create(ctx context.Context, key string, obj, out runtime.Object, ttl uint64) error {
	if err := c.CacheDelegator.Create(ctx, key, obj, out, ttl); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, wait.ForeverTestTimeout, true, func(ctx context.Context) (bool, error) {
		cur := &example.Pod{}
		if err := c.CacheDelegator.Get(ctx, key, storage.GetOptions{ResourceVersion: "0"}, cur); err != nil {
			if storage.IsNotFound(err) {
				return false, nil
			}
			return false, err
		}
		return equality.Semantic.DeepEqual(cur, out), nil
	})
}

// TestCacherSuite runs the upstream suite's list and watch tests through the
// watch cache, as upstream's cacher_test.go wires them.
func TestCacherSuite(t *testing.T) {
	for _, snapshot := range []bool{true, false} {
		name := "ConsistentList/ListFromCacheSnapshot=false"
		if snapshot {
			name = "ConsistentList/ListFromCacheSnapshot=true"
		}
		t.Run(name, func(t *testing.T) {
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, snapshot)
			ctx, d, e, _ := setupCacher(t)
			storagetesting.RunTestConsistentList(ctx, t, d, e.increaseRV(), true, true, snapshot)
		})
	}
	tests := map[string]func(*testing.T, context.Context, *cacher.CacheDelegator, *env){
		"GetListNonRecursive": func(t *testing.T, ctx context.Context, d *cacher.CacheDelegator, e *env) {
			storagetesting.RunTestGetListNonRecursive(ctx, t, e.increaseRV(), d)
		},
		"Watch": func(t *testing.T, ctx context.Context, d *cacher.CacheDelegator, e *env) {
			storagetesting.RunTestWatch(ctx, t, d)
		},
		"DeleteTriggerWatch": func(t *testing.T, ctx context.Context, d *cacher.CacheDelegator, e *env) {
			storagetesting.RunTestDeleteTriggerWatch(ctx, t, d)
		},
		"WatchFromNonZero": func(t *testing.T, ctx context.Context, d *cacher.CacheDelegator, e *env) {
			storagetesting.RunTestWatchFromNonZero(ctx, t, d)
		},
		"DelayedWatchDelivery": func(t *testing.T, ctx context.Context, d *cacher.CacheDelegator, e *env) {
			storagetesting.RunTestDelayedWatchDelivery(ctx, t, d)
		},
		"WatcherTimeout": func(t *testing.T, ctx context.Context, d *cacher.CacheDelegator, e *env) {
			storagetesting.RunTestWatcherTimeout(ctx, t, d)
		},
		"WatchDeleteEventObjectHaveLatestRV": func(t *testing.T, ctx context.Context, d *cacher.CacheDelegator, e *env) {
			storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(ctx, t, d)
		},
		"WatchInitializationSignal": func(t *testing.T, ctx context.Context, d *cacher.CacheDelegator, e *env) {
			storagetesting.RunTestWatchInitializationSignal(ctx, t, d)
		},
		"WatchDispatchBookmarkEvents": func(t *testing.T, ctx context.Context, d *cacher.CacheDelegator, e *env) {
			storagetesting.RunTestWatchDispatchBookmarkEvents(ctx, t, d, true)
		},
		"WatchBookmarksWithCorrectResourceVersion": func(t *testing.T, ctx context.Context, d *cacher.CacheDelegator, e *env) {
			storagetesting.RunTestOptionalWatchBookmarksWithCorrectResourceVersion(ctx, t, d)
		},
		"SendInitialEventsBackwardCompatibility": func(t *testing.T, ctx context.Context, d *cacher.CacheDelegator, e *env) {
			storagetesting.RunSendInitialEventsBackwardCompatibility(ctx, t, d)
		},
	}
	// These set no feature gate, and several of them wait: run them
	// together.
	for name, run := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, d, e, _ := setupCacher(t)
			run(t, ctx, d, e)
		})
	}
	// WatchList (sendInitialEvents), which the cache refuses unless the
	// server supports progress requests; these set the WatchList gate.
	watchList := map[string]func(context.Context, *testing.T, storage.Interface){
		"WatchSemantics":                     storagetesting.RunWatchSemantics,
		"WatchSemanticInitialEventsExtended": storagetesting.RunWatchSemanticInitialEventsExtended,
		"WatchListMatchSingle":               storagetesting.RunWatchListMatchSingle,
	}
	for name, run := range watchList {
		t.Run(name, func(t *testing.T) {
			ctx, d, _, _ := setupCacher(t)
			run(ctx, t, &cacheCreateWrapper{d})
		})
	}
}
