package guard

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/time/rate"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/config"
)

// Tenants own key prefixes (config tenants:). Apply counts each tenant's
// live keys and bytes (server/apply/tenants.go); here the server enforces
// their quotas and rate limits at the edge, before a write is queued, and
// hands the usage to policies.

// tenantSet is the configured tenants with their rate limiters.
type tenantSet struct {
	list     []config.Tenant
	limiters []*rate.Limiter // by index in list; nil: no rate limit
	hasQuota bool            // some tenant has a quota: writes are checked
}

// newTenantSet builds the set for ts. A tenant of prev (the set being
// replaced by a reload) that still has a rate limit keeps its bucket, with
// the new rate and burst, so a reload neither refills nor empties it.
func newTenantSet(ts []config.Tenant, prev *tenantSet) *tenantSet {
	if len(ts) == 0 {
		return nil
	}
	set := &tenantSet{list: ts, limiters: make([]*rate.Limiter, len(ts))}
	for i, t := range ts {
		set.hasQuota = set.hasQuota || t.Quota.MaxKeys > 0 || t.Quota.MaxBytes > 0
		if t.RateLimit.QPS <= 0 {
			continue
		}
		burst := t.RateLimit.Burst
		if burst <= 0 {
			burst = int(math.Ceil(t.RateLimit.QPS))
		}
		if lim := prev.limiter(t.Name); lim != nil {
			lim.SetLimit(rate.Limit(t.RateLimit.QPS))
			lim.SetBurst(burst)
			set.limiters[i] = lim
			continue
		}
		set.limiters[i] = rate.NewLimiter(rate.Limit(t.RateLimit.QPS), burst)
	}
	return set
}

// limiter returns the named tenant's bucket, or nil.
func (ts *tenantSet) limiter(name string) *rate.Limiter {
	if ts == nil {
		return nil
	}
	for i := range ts.list {
		if ts.list[i].Name == name {
			return ts.limiters[i]
		}
	}
	return nil
}

// reloadTenants applies a reloaded tenants list: apply's counted tenants
// first (a new tenant, or a moved prefix, is counted between two batches;
// unchanged ones keep their counts), then the quotas and rate limits the
// edge enforces.
func (s *Guard) reloadTenants(ctx context.Context, ts []config.Tenant) error {
	old := s.tenants.Load()
	var oldList []config.Tenant
	if old != nil {
		oldList = old.list
	}
	if reflect.DeepEqual(oldList, ts) || (len(oldList) == 0 && len(ts) == 0) {
		return nil
	}
	if !slices.EqualFunc(oldList, ts, func(a, b config.Tenant) bool { return a.Name == b.Name && a.Prefix == b.Prefix }) {
		err := s.counter.SetTenants(ctx, ApplyTenants(ts))
		if err != nil {
			return fmt.Errorf("tenants: %w", err)
		}
	}
	s.tenants.Store(newTenantSet(ts, old))
	names := make([]string, len(ts))
	for i := range ts {
		names[i] = ts[i].Name
	}
	s.lg.Info("reloaded tenants", "tenants", names)
	return nil
}

// index returns the tenant owning key, or -1.
func (ts *tenantSet) index(key []byte) int {
	if ts == nil {
		return -1
	}
	for i := range ts.list {
		p := ts.list[i].Prefix
		if len(key) >= len(p) && string(key[:len(p)]) == p {
			return i
		}
	}
	return -1
}

// CheckTenantRate takes a token from the bucket of the tenant owning key
// (the request's first key): etcd's too-many-requests error when empty.
func (s *Guard) CheckTenantRate(key []byte) error {
	ts := s.tenants.Load()
	i := ts.index(key)
	if i < 0 || ts.limiters[i] == nil {
		return nil
	}
	if !ts.limiters[i].Allow() {
		s.metrics.rateLimited.WithLabelValues("tenant").Inc()
		return ErrTooManyRequests
	}
	return nil
}

// tenantOf names the tenant owning key with its current usage, for
// policies.
func (s *Guard) tenantOf(key []byte) (string, uint64, uint64) {
	name, keys, byts := s.applier.TenantUsage(key)
	return name, uint64(max(keys, 0)), uint64(max(byts, 0))
}

// errTenantQuota is a write refused by a tenant's quota.
func errTenantQuota(t *config.Tenant, what string, used, limit int64) error {
	return &QuotaError{Tenant: t.Name, What: what, Used: used, Limit: limit}
}

// quotaDelta accumulates what a write adds to each tenant.
type quotaDelta struct {
	keys, bytes []int64 // by tenant index
}

// addPut adds a put's effect: a new key counts one key plus its bytes, an
// overwrite the change in value size.
func (s *Guard) quotaAddPut(ctx context.Context, ts *tenantSet, tx *mvcc.ReadTxn, d *quotaDelta, r *pb.PutRequest) error {
	i := ts.index(r.Key)
	if i < 0 {
		return nil
	}
	q := ts.list[i].Quota
	if q.MaxKeys == 0 && q.MaxBytes == 0 {
		return nil
	}
	rr, err := tx.Range(ctx, r.Key, nil, mvcc.RangeOptions{})
	if err != nil {
		return err
	}
	newSize := int64(len(r.Key) + len(r.Value))
	if len(rr.KVs) == 0 {
		d.keys[i]++
		d.bytes[i] += newSize
		return nil
	}
	if r.IgnoreValue {
		return nil
	}
	d.bytes[i] += newSize - int64(len(rr.KVs[0].Key)+len(rr.KVs[0].Value))
	return nil
}

func (s *Guard) quotaAddTxn(ctx context.Context, ts *tenantSet, tx *mvcc.ReadTxn, d *quotaDelta, r *pb.TxnRequest) error {
	// Both branches count: which one runs is known only at apply.
	for _, ops := range [2][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestPut:
				if err := s.quotaAddPut(ctx, ts, tx, d, v.RequestPut); err != nil {
					return err
				}
			case *pb.RequestOp_RequestTxn:
				if err := s.quotaAddTxn(ctx, ts, tx, d, v.RequestTxn); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checkQuota refuses a write (a put, or a txn with puts) that would take a
// tenant past its max_keys or max_bytes. Writes that shrink a tenant's
// usage always pass. Concurrent writes are checked against the same counts,
// so a burst may overshoot by what is in flight, as etcd's space quota does.
func (s *Guard) checkQuota(ctx context.Context, put *pb.PutRequest, txn *pb.TxnRequest) error {
	ts := s.tenants.Load()
	if ts == nil || !ts.hasQuota {
		return nil
	}
	d := &quotaDelta{keys: make([]int64, len(ts.list)), bytes: make([]int64, len(ts.list))}
	tx, err := s.store.Read()
	if err != nil {
		return err
	}
	defer tx.End()
	if put != nil {
		err = s.quotaAddPut(ctx, ts, tx, d, put)
	} else {
		err = s.quotaAddTxn(ctx, ts, tx, d, txn)
	}
	if err != nil {
		return err
	}
	for i := range ts.list {
		t := &ts.list[i]
		if d.keys[i] <= 0 && d.bytes[i] <= 0 {
			continue
		}
		keys, byts, err := s.applier.Usage(t.Name)
		if errors.Is(err, apply.ErrTenantUnknown) {
			continue // a reload is adding or removing it: not counted here yet (or any more)
		}
		if err != nil {
			return err
		}
		if q := t.Quota.MaxKeys; q > 0 && d.keys[i] > 0 && keys+d.keys[i] > q {
			return errTenantQuota(t, "keys", keys+d.keys[i], q)
		}
		if q := t.Quota.MaxBytes; q > 0 && d.bytes[i] > 0 && byts+d.bytes[i] > q {
			return errTenantQuota(t, "bytes", byts+d.bytes[i], q)
		}
	}
	return nil
}

// FirstKey is the key a txn is rate-limited by: its first compare's, else
// its first op's.
func FirstKey(r *pb.TxnRequest) []byte {
	if len(r.Compare) > 0 {
		return r.Compare[0].Key
	}
	for _, ops := range [2][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				return v.RequestRange.Key
			case *pb.RequestOp_RequestPut:
				return v.RequestPut.Key
			case *pb.RequestOp_RequestDeleteRange:
				return v.RequestDeleteRange.Key
			case *pb.RequestOp_RequestTxn:
				if k := FirstKey(v.RequestTxn); k != nil {
					return k
				}
			}
		}
	}
	return nil
}
