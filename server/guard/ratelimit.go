package guard

import (
	"context"
	"sync"

	"golang.org/x/time/rate"
)

// rateLimiter is the global and per-user token buckets. A nil *rateLimiter
// allows everything.
type rateLimiter struct {
	global *rate.Limiter // nil: no global limit

	userRate  rate.Limit // 0: no per-user limit
	userBurst int
	users     sync.Map // user name → *rate.Limiter
}

func newRateLimiter(globalRate, globalBurst, userRate, userBurst int) *rateLimiter {
	if globalRate <= 0 && userRate <= 0 {
		return nil
	}
	r := &rateLimiter{}
	if globalRate > 0 {
		if globalBurst <= 0 {
			globalBurst = globalRate
		}
		r.global = rate.NewLimiter(rate.Limit(globalRate), globalBurst)
	}
	if userRate > 0 {
		if userBurst <= 0 {
			userBurst = userRate
		}
		r.userRate, r.userBurst = rate.Limit(userRate), userBurst
	}
	return r
}

// allow takes one token from user's bucket (if user is known and per-user
// limits are on) and from the global bucket. It returns the scope that
// refused, or "".
func (r *rateLimiter) allow(user string) string {
	if r == nil {
		return ""
	}
	if user != "" && r.userRate > 0 {
		l, ok := r.users.Load(user)
		if !ok {
			l, _ = r.users.LoadOrStore(user, rate.NewLimiter(r.userRate, r.userBurst))
		}
		if !l.(*rate.Limiter).Allow() {
			return "user"
		}
	}
	if r.global != nil && !r.global.Allow() {
		return "global"
	}
	return ""
}

// healthService is exempt from rate limits: probes must see a busy server
// as alive.
const healthService = "/grpc.health.v1.Health/"

// identityKey keys the Identity CheckRate found in a request's context.
type identityKey struct{}

// CheckRate takes a token for a call of method from the caller's bucket
// and the global one: ErrTooManyRequests when one is empty. It identifies
// the caller (the token's user, else the client certificate's CN) and
// returns ctx carrying that identity, so that the handler's checks do not
// identify it again (Identify reuses it while auth has not changed). A nil
// Guard limits nothing.
func (s *Guard) CheckRate(ctx context.Context, method string) (context.Context, error) {
	if s == nil || s.limiter == nil || len(method) >= len(healthService) && method[:len(healthService)] == healthService {
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
	if scope := s.limiter.allow(user); scope != "" {
		s.metrics.rateLimited.WithLabelValues(scope).Inc()
		return ctx, ErrTooManyRequests
	}
	return ctx, nil
}
