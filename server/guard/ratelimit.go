package guard

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/metastore-dev/metastore/server/config"
)

// CallKind is which kind bucket a call draws from besides the global and
// per-user ones.
type CallKind int

const (
	// KindUnary is a unary call (limits.unary_rate_limit).
	KindUnary CallKind = iota
	// KindStream is a stream's opening or a watch's creation
	// (limits.stream_rate_limit).
	KindStream
	// KindNone draws from no kind bucket: a Watch stream's opening, whose
	// creations are counted instead.
	KindNone
)

// WatchMethod is the Watch RPC: the stream bucket counts the watches
// created on it (each a create request), not the stream itself, so a
// clientv3 client that multiplexes watches on one stream is limited the
// same as one that opens a stream per watch.
const WatchMethod = "/etcdserverpb.Watch/Watch"

// StreamKind is the bucket a stream opening of method draws from.
func StreamKind(method string) CallKind {
	if method == WatchMethod {
		return KindNone
	}
	return KindStream
}

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

func (b *bucket) on() bool { return b.l.Load() != nil }

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

// any reports whether some bucket limits calls.
func (r *rateLimits) any() bool {
	return r.userRate.Load() > 0 || r.global.on() || r.unary.on() || r.stream.on()
}

// userBucket returns the bucket of user, or nil without a per-user limit
// or a user.
func (r *rateLimits) userBucket(user string) *rate.Limiter {
	if user == "" || r.userRate.Load() == 0 {
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

// allow takes a token from user's bucket, the kind's and the global one,
// in that order, and returns the scope that refused, or "".
func (r *rateLimits) allow(user string, kind CallKind) string {
	if l := r.userBucket(user); l != nil && !l.Allow() {
		return "user"
	}
	switch {
	case kind == KindUnary && !r.unary.allow():
		return "unary"
	case kind == KindStream && !r.stream.allow():
		return "stream"
	}
	if !r.global.allow() {
		return "global"
	}
	return ""
}

// healthService is exempt from rate limits: probes must see a busy server
// as alive.
const healthService = "/grpc.health.v1.Health/"

// identityKey keys the Identity CheckRate found in a request's context.
type identityKey struct{}

// CheckRate takes a token for a call of method, of the given kind, from
// the caller's bucket, the kind's and the global one: ErrTooManyRequests
// when one is empty (counted under the bucket that refused). While some
// limit is on it identifies the caller (the token's user, else the client
// certificate's CN) and returns ctx carrying that identity, so that the
// handler's checks do not identify it again (Identify reuses it while auth
// has not changed). Health checks are never limited. A nil Guard limits
// nothing.
func (s *Guard) CheckRate(ctx context.Context, method string, kind CallKind) (context.Context, error) {
	if s == nil || s.rates == nil || strings.HasPrefix(method, healthService) || !s.rates.any() {
		return ctx, nil
	}
	user := ""
	if id, err := s.Identify(ctx); err == nil {
		ctx = context.WithValue(ctx, identityKey{}, id)
		user = id.User
	}
	if user == "" {
		// While auth is disabled only the certificate can name one.
		user = s.ClientCertUser(ctx)
	}
	if scope := s.rates.allow(user, kind); scope != "" {
		s.rates.refused.WithLabelValues(scope).Inc()
		return ctx, ErrTooManyRequests
	}
	return ctx, nil
}

// SetRateLimits applies the global, per-user, unary and stream limits of
// l (a reload); buckets keep their tokens.
func (s *Guard) SetRateLimits(l config.Limits) { s.rates.set(l) }
