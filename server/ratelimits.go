package server

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"golang.org/x/time/rate"

	"github.com/metastore-dev/metastore/server/config"
)

// callKind is which kind bucket a call draws from besides the global and
// per-user ones.
type callKind int

const (
	kindUnary callKind = iota
	kindStream
	kindNone // a Watch stream's opening: its creations are counted instead
)

// watchMethod is the Watch RPC: the stream bucket counts the watches
// created on it (each a create request), not the stream itself, so a
// clientv3 client that multiplexes watches on one stream is limited the
// same as one that opens a stream per watch.
const watchMethod = "/etcdserverpb.Watch/Watch"

// bucket is a token bucket whose rate and burst a reload may change. It
// keeps its tokens across a change (neither refilled nor emptied); a nil
// limiter allows everything.
type bucket struct {
	l atomic.Pointer[rate.Limiter]
}

// set makes the bucket r tokens a second with room for burst (r when
// burst is 0); r 0 removes the limit.
func (b *bucket) set(r, burst int) {
	if r <= 0 {
		b.l.Store(nil)
		return
	}
	if burst <= 0 {
		burst = r
	}
	if cur := b.l.Load(); cur != nil {
		cur.SetLimit(rate.Limit(r))
		cur.SetBurst(burst)
		return
	}
	b.l.Store(rate.NewLimiter(rate.Limit(r), burst))
}

func (b *bucket) allow() bool {
	l := b.l.Load()
	return l == nil || l.Allow()
}

// rateLimits are the token buckets every request goes through: the
// caller's own (per user), its kind's (unary calls, stream creations) and
// the global one. Each refusal is counted under the bucket that refused.
type rateLimits struct {
	global, unary, stream bucket

	// userRate and userBurst are the per-user bucket's settings; 0 rate
	// means no per-user limit.
	userMu    sync.Mutex // serializes set with the creation of user buckets
	userRate  atomic.Int64
	userBurst atomic.Int64
	users     sync.Map // user name → *rate.Limiter

	refused *prometheus.CounterVec // by scope: global, user, unary, stream
	limit   *prometheus.GaugeVec   // configured rate by bucket; 0 is no limit
}

func newRateLimits(l config.Limits, refused *prometheus.CounterVec, reg prometheus.Registerer) *rateLimits {
	r := &rateLimits{
		refused: refused,
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "metastore_server_rate_limit",
			Help: "Configured rate of each token bucket (global, user, unary, stream) in requests per second; 0 means no limit. Refusals are metastore_server_rate_limited_total by the same scope.",
		}, []string{"scope"}),
	}
	reg.MustRegister(r.limit)
	r.set(l)
	return r
}

// set applies the limits of l; buckets keep their tokens.
func (r *rateLimits) set(l config.Limits) {
	r.global.set(l.RateLimit, l.RateBurst)
	r.unary.set(l.UnaryRateLimit, l.UnaryRateBurst)
	r.stream.set(l.StreamRateLimit, l.StreamRateBurst)
	userBurst := l.UserRateBurst
	if userBurst <= 0 {
		userBurst = l.UserRateLimit
	}
	r.userMu.Lock()
	r.userRate.Store(int64(max(l.UserRateLimit, 0)))
	r.userBurst.Store(int64(userBurst))
	if l.UserRateLimit <= 0 {
		r.users.Clear()
	} else {
		r.users.Range(func(_, v any) bool {
			v.(*rate.Limiter).SetLimit(rate.Limit(l.UserRateLimit))
			v.(*rate.Limiter).SetBurst(userBurst)
			return true
		})
	}
	r.userMu.Unlock()
	for scope, v := range map[string]int{"global": l.RateLimit, "user": l.UserRateLimit, "unary": l.UnaryRateLimit, "stream": l.StreamRateLimit} {
		r.limit.WithLabelValues(scope).Set(float64(max(v, 0)))
	}
}

// callerNamer names the user a request is rate-limited as (the Server).
type callerNamer interface {
	requestUser(ctx context.Context) string
}

// userBucket returns the bucket of the caller of ctx, or nil without a
// per-user limit (then the caller is not looked up: that costs a token
// lookup).
func (r *rateLimits) userBucket(ctx context.Context, who callerNamer) *rate.Limiter {
	if r.userRate.Load() == 0 {
		return nil
	}
	user := who.requestUser(ctx)
	if user == "" {
		return nil
	}
	if l, ok := r.users.Load(user); ok {
		return l.(*rate.Limiter)
	}
	r.userMu.Lock()
	defer r.userMu.Unlock()
	rt := r.userRate.Load()
	if rt == 0 {
		return nil
	}
	l, _ := r.users.LoadOrStore(user, rate.NewLimiter(rate.Limit(rt), int(r.userBurst.Load())))
	return l.(*rate.Limiter)
}

// allow takes a token from the caller's bucket, the kind's and the global
// one, in that order, and returns the scope that refused, or "".
func (r *rateLimits) allow(ctx context.Context, kind callKind, who callerNamer) string {
	if l := r.userBucket(ctx, who); l != nil && !l.Allow() {
		return "user"
	}
	switch {
	case kind == kindUnary && !r.unary.allow():
		return "unary"
	case kind == kindStream && !r.stream.allow():
		return "stream"
	}
	if !r.global.allow() {
		return "global"
	}
	return ""
}

// check is allow for a call of method: errTooManyRequests when a bucket is
// empty. Health checks are never limited: probes must see a busy server
// as alive. A nil *rateLimits limits nothing.
func (r *rateLimits) check(ctx context.Context, kind callKind, method string, who callerNamer) error {
	if r == nil || strings.HasPrefix(method, healthService) {
		return nil
	}
	if scope := r.allow(ctx, kind, who); scope != "" {
		r.refused.WithLabelValues(scope).Inc()
		return errTooManyRequests
	}
	return nil
}

// streamKind is the bucket a stream opening draws from.
func streamKind(method string) callKind {
	if method == watchMethod {
		return kindNone
	}
	return kindStream
}

// allowWatchCreate takes a stream token for one watch created on a Watch
// stream (and the caller's and the global one). A refused creation is
// canceled with etcd's "too many requests" as its reason, which clientv3
// turns into rpctypes.ErrTooManyRequests; the stream and its other
// watchers carry on.
func (s *Server) allowWatchCreate(ctx context.Context) (cancelReason string) {
	if err := s.rates.check(ctx, kindStream, watchMethod, s); err != nil {
		return rpctypes.ErrorDesc(err)
	}
	return ""
}
