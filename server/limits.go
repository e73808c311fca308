package server

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"golang.org/x/time/rate"
)

// connLimitListener caps the open connections of one listener. A connection
// beyond the cap is accepted and closed at once, so the client gets a prompt
// failure (and retries with backoff) instead of hanging in the backlog.
type connLimitListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	refused func() // called per refused connection
}

func newConnLimitListener(ln net.Listener, max int, refused func()) net.Listener {
	if max <= 0 {
		return ln
	}
	return &connLimitListener{Listener: ln, max: int64(max), refused: refused}
}

func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			c.Close()
			if l.refused != nil {
				l.refused()
			}
			continue
		}
		return &limitedConn{Conn: c, l: l}, nil
	}
}

// limitedConn gives its slot back on the first Close.
type limitedConn struct {
	net.Conn
	l    *connLimitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

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

// requestUser names the user a request is rate-limited as: the token's
// user, or the client certificate's CN under client-cert-auth; while auth
// is disabled only the certificate can name one.
func (s *Server) requestUser(ctx context.Context) string {
	if id, err := s.identify(ctx); err == nil && id.user != "" {
		return id.user
	}
	return s.ClientCertUser(ctx)
}

// errTooManyRequests is what a rate-limited request gets: etcd's own error
// for an overloaded server, which clients already back off on.
var errTooManyRequests = rpctypes.ErrGRPCRequestTooManyRequests
