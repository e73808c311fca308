package k8s

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"
	grpccodes "google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"k8s.io/apimachinery/pkg/api/apitesting"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
	"k8s.io/utils/clock"
)

// valuePrefix is what the suite's PrefixTransformer puts before every stored
// value (upstream's store_test.go uses the same).
const valuePrefix = "test!"

// etcdStore is what etcd3.New returns, seen through its exported methods.
type etcdStore interface {
	storage.Interface
	CompactRevision() int64
	EnableResourceSizeEstimation(storage.KeysFunc) error
}

// env is one test's metastore, the client kube-apiserver would use (with
// upstream's call recorders in it, as its test server installs them) and an
// etcd3 store over it.
type env struct {
	server      *server
	client      *kubernetes.Client
	rawKV       clientv3.KV // the client's KV without the recorder
	kv          *storagetesting.KVRecorder
	lists       *storagetesting.KubernetesRecorder
	store       etcdStore
	codec       runtime.Codec
	transformer *swappableTransformer
	prefix      *storagetesting.PrefixTransformer
}

type setupOptions struct {
	serverArgs     []string
	codec          runtime.Codec
	prefix         string
	resourcePrefix string
	transformer    value.Transformer
	leaseConfig    etcd3.LeaseManagerConfig
}

type setupOption func(*setupOptions)

// withServerArgs adds metastore flags.
func withServerArgs(args ...string) setupOption {
	return func(o *setupOptions) { o.serverArgs = append(o.serverArgs, args...) }
}

func withCodec(c runtime.Codec) setupOption { return func(o *setupOptions) { o.codec = c } }

func withTransformer(tr value.Transformer) setupOption {
	return func(o *setupOptions) { o.transformer = tr }
}

func withPrefix(prefix, resourcePrefix string) setupOption {
	return func(o *setupOptions) { o.prefix, o.resourcePrefix = prefix, resourcePrefix }
}

// setup mirrors upstream's testSetup (k8s.io/apiserver/pkg/storage/etcd3,
// store_test.go) with metastore in place of the embedded etcd: the same
// codec, example Pod types, prefix transformer, lease reuse of 1s and a
// compactor that never compacts by itself.
func setup(t *testing.T, opts ...setupOption) (context.Context, *env) {
	t.Helper()
	o := setupOptions{
		codec:          apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion),
		resourcePrefix: "/pods/",
	}
	lc := etcd3.NewDefaultLeaseManagerConfig()
	lc.ReuseDurationSeconds = 1
	o.leaseConfig = lc
	for _, opt := range opts {
		opt(&o)
	}
	e := &env{codec: o.codec}
	e.server = startMetastore(t, o.serverArgs...)
	e.client = newClient(t, e.server.Endpoint)
	e.rawKV = e.client.KV
	adaptToRangeStream(t, e.rawKV)
	e.lists = storagetesting.NewKubernetesRecorder(e.client.Kubernetes)
	e.kv = storagetesting.NewKVRecorder(e.client.KV, e.lists)
	e.client.KV = e.kv
	e.client.Kubernetes = e.lists

	tr := o.transformer
	if tr == nil {
		e.prefix = storagetesting.NewPrefixTransformer([]byte(valuePrefix), false)
		tr = e.prefix
	}
	e.transformer = newSwappableTransformer(tr)

	versioner := storage.APIObjectVersioner{}
	compactor := etcd3.NewCompactor(e.client.Client, 0, clock.RealClock{}, nil)
	t.Cleanup(compactor.Stop)
	s, err := etcd3.New(e.client, compactor, o.codec,
		func() runtime.Object { return &example.Pod{} },
		func() runtime.Object { return &example.PodList{} },
		o.prefix, o.resourcePrefix, schema.GroupResource{Resource: "pods"},
		e.transformer, o.leaseConfig, etcd3.NewDefaultDecoder(o.codec, versioner), versioner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	e.store = s
	return context.Background(), e
}

// rangeStreamSupported probes KV.RangeStream (etcd 3.7) the way the
// apiserver does: an Unimplemented answer means the server has none.
func rangeStreamSupported(t testing.TB, kv clientv3.KV) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := kv.GetStream(ctx, "/k8s-test/probe", clientv3.WithPrefix())
	if err == nil {
		for r := range ch {
			if err = r.Err(); err != nil {
				break
			}
		}
	}
	switch {
	case err == nil:
		return true
	case grpcstatus.Code(err) == grpccodes.Unimplemented:
		return false
	default:
		t.Fatalf("RangeStream probe: %v", err)
		return false
	}
}

// adaptToRangeStream makes the tests independent of whether the server has
// KV.RangeStream. The apiserver enables EtcdRangeStream by default, tries a
// stream and falls back on Unimplemented, marking the feature unsupported in
// a process-wide checker for ten minutes. The suite's call counting assumes
// no failed probe, so on the first setup a server without RangeStream turns
// the gate off for the whole test binary (as an apiserver that has already
// learnt it); with the gate untouched per test, tests can run in parallel.
func adaptToRangeStream(t *testing.T, kv clientv3.KV) {
	rangeStreamOnce.Do(func() {
		if rangeStreamSupported(t, kv) {
			return
		}
		if err := utilfeature.DefaultMutableFeatureGate.Set(string(features.EtcdRangeStream) + "=false"); err != nil {
			t.Fatal(err)
		}
	})
}

var rangeStreamOnce sync.Once

// requireRangeStream skips a test that is about RangeStream when the server
// answers it with Unimplemented, and otherwise turns the gate on.
func requireRangeStream(t *testing.T, e *env) {
	t.Helper()
	if !rangeStreamSupported(t, e.rawKV) {
		t.Skip("metastore answers KV.RangeStream with Unimplemented (etcd 3.7's streamed Range is not implemented yet); the apiserver falls back to paged Range, covered by the rangeStream=false variant")
	}
	featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.EtcdRangeStream, true)
}

// swappableTransformer lets the suite replace the store's transformer after
// construction (upstream reaches into the store's private fields for that).
type swappableTransformer struct {
	cur atomic.Pointer[value.Transformer]
}

func newSwappableTransformer(tr value.Transformer) *swappableTransformer {
	s := &swappableTransformer{}
	s.cur.Store(&tr)
	return s
}

func (s *swappableTransformer) get() value.Transformer { return *s.cur.Load() }

func (s *swappableTransformer) set(tr value.Transformer) { s.cur.Store(&tr) }

func (s *swappableTransformer) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	return s.get().TransformFromStorage(ctx, data, dataCtx)
}

func (s *swappableTransformer) TransformToStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, error) {
	return s.get().TransformToStorage(ctx, data, dataCtx)
}

// prefixTransformerStore is storagetesting.InterfaceWithPrefixTransformer
// over an env.
type prefixTransformerStore struct {
	etcdStore
	e *env
}

func (e *env) withPrefixTransformer() *prefixTransformerStore {
	return &prefixTransformerStore{etcdStore: e.store, e: e}
}

func (p *prefixTransformerStore) UpdatePrefixTransformer(modifier storagetesting.PrefixTransformerModifier) func() {
	orig := p.e.transformer.get()
	pt, ok := orig.(*storagetesting.PrefixTransformer)
	if !ok {
		panic("UpdatePrefixTransformer: the store's transformer is not a PrefixTransformer")
	}
	cp := storagetesting.NewPrefixTransformer([]byte(valuePrefix), false)
	*cp = *pt // a copy with the same prefix and counters, as upstream makes
	p.e.transformer.set(modifier(cp))
	return func() { p.e.transformer.set(orig) }
}

// increaseRV writes an unrelated key, as upstream's increaseRVFunc does.
func (e *env) increaseRV() storagetesting.IncreaseRVFunc {
	return func(ctx context.Context, t *testing.T) int64 {
		resp, err := e.client.KV.Put(ctx, "increaseRV", "ok")
		if err != nil {
			t.Fatalf("Could not update increaseRV: %v", err)
		}
		return resp.Header.Revision
	}
}

// compaction compacts the way the apiserver's compactor does (etcd3.Compact:
// a Txn on compact_rev_key, then Compact), retrying once with the version the
// first attempt learnt, and waits until the store has observed it when
// ListFromCacheSnapshot makes it watch compact_rev_key.
func (e *env) compaction() storagetesting.Compaction {
	return func(ctx context.Context, t *testing.T, resourceVersion string) {
		rv, err := storage.APIObjectVersioner{}.ParseResourceVersion(resourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		var cur int64
		cur, _, _, err = etcd3.Compact(ctx, e.client.Client, cur, int64(rv))
		if err != nil {
			_, _, _, err = etcd3.Compact(ctx, e.client.Client, cur, int64(rv))
		}
		if err != nil {
			t.Fatal(err)
		}
		if utilfeature.DefaultFeatureGate.Enabled(features.ListFromCacheSnapshot) {
			deadline := time.Now().Add(30 * time.Second)
			for e.store.CompactRevision() != int64(rv) {
				if time.Now().After(deadline) {
					t.Fatalf("the store did not observe compaction to %d (has %d)", rv, e.store.CompactRevision())
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}

// checkStorageInvariants is upstream's KeyValidation: the stored value is the
// prefix plus the object encoded without resourceVersion or selfLink.
func (e *env) checkStorageInvariants() storagetesting.KeyValidation {
	return func(ctx context.Context, t *testing.T, key string) {
		resp, err := e.client.KV.Get(ctx, key)
		if err != nil {
			t.Fatalf("Get(%q): %v", key, err)
		}
		if len(resp.Kvs) == 0 {
			t.Fatalf("expecting non empty result on key: %s", key)
		}
		decoded, err := runtime.Decode(e.codec, resp.Kvs[0].Value[len(valuePrefix):])
		if err != nil {
			t.Fatalf("decode %q: %v", resp.Kvs[0].Value, err)
		}
		obj := decoded.(*example.Pod)
		if obj.ResourceVersion != "" {
			t.Errorf("stored object should have empty resource version")
		}
		if obj.SelfLink != "" {
			t.Errorf("stored output should have empty selfLink")
		}
	}
}

// maxLimit is the largest page the etcd3 store asks for (its private
// constant of the same name).
const maxLimit = 10000

// checkCalls is upstream's checkStorageCallsInvariants: objects decoded and
// Range calls made for a list, the page size doubling while pages come back
// short.
func (e *env) checkCalls() storagetesting.CallsValidation {
	return func(t *testing.T, pageSize, estimatedProcessedObjects uint64) {
		if reads := e.prefix.GetReadsAndReset(); reads != estimatedProcessedObjects {
			t.Errorf("unexpected reads: %d, expected: %d", reads, estimatedProcessedObjects)
		}
		want := uint64(1)
		if pageSize != 0 {
			cur := pageSize
			for sum := uint64(1); sum < estimatedProcessedObjects; {
				cur = min(cur*2, maxLimit)
				sum += cur
				want++
			}
		}
		if reads := e.kv.GetReadsAndReset() + e.kv.GetStreamReadsAndReset(); reads != want {
			t.Fatalf("unexpected reads: %d, want: %d", reads, want)
		}
	}
}

// failingCodec and failingTransformer fail decoding on demand, for the
// unsafe-deletion tests (upstream's testCodec and testTransformer).
type failingCodec struct {
	runtime.Codec
	fail atomic.Bool
}

func (c *failingCodec) setFailing(v bool) { c.fail.Store(v) }

func (c *failingCodec) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	if c.fail.Load() {
		return nil, nil, errors.New("synthetic error")
	}
	return c.Codec.Decode(data, defaults, into)
}

type failingTransformer struct {
	value.Transformer
	fail atomic.Bool
}

func (f *failingTransformer) setFailing(v bool) { f.fail.Store(v) }

func (f *failingTransformer) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	if f.fail.Load() {
		return nil, false, errors.New("synthetic error")
	}
	return f.Transformer.TransformFromStorage(ctx, data, dataCtx)
}

// keysFunc lists the keys under the store's resource prefix, as the store's
// own getKeys does, for resource size estimation.
func (e *env) keysFunc(resourcePrefix string) storage.KeysFunc {
	return func(ctx context.Context) ([]string, error) {
		resp, err := e.client.KV.Get(ctx, resourcePrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, err
		}
		keys := make([]string, len(resp.Kvs))
		for i, kv := range resp.Kvs {
			keys[i] = string(kv.Key)
		}
		return keys, nil
	}
}

func setupCodec() runtime.Codec {
	return apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)
}
