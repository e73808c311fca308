package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/puzpuzpuz/xsync/v4"
)

// TokenOptions select and configure the token kind (etcd's --auth-token and
// --auth-token-ttl).
type TokenOptions struct {
	// JWT, when set, makes tokens signed JWTs; otherwise they are etcd's
	// "simple" tokens, random strings held in memory.
	JWT *JWTOptions
	// TTL is a simple token's lifetime since its last use (etcd's
	// --auth-token-ttl); default 300s.
	TTL time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// SweepInterval is how often expired tokens are dropped; default 1s.
	SweepInterval time.Duration
	// ClockResolution is how often the coarse clock that token checks read
	// is advanced (reading the real clock costs more than the rest of a
	// check on some virtual machines); default 100ms. Ignored with Now.
	ClockResolution time.Duration
	Logger          *slog.Logger
}

// simpleTokenLen is the length of a simple token's random part, as etcd's.
const simpleTokenLen = 16

const simpleTokenLetters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// maxCachedJWTs bounds the cache of verified JWTs; beyond it tokens are
// verified on every use.
const maxCachedJWTs = 1 << 16

// maxJWTCacheAge bounds how long a verified JWT without "exp" is cached.
const maxJWTCacheAge = time.Hour

// tokenEntry is a known token: a simple token issued here, or a JWT whose
// signature was verified.
type tokenEntry struct {
	user      string
	issuedRev uint64
	expires   atomic.Int64 // unix nanoseconds
}

// Tokens issues tokens and resolves them to users, checking each against the
// Store's current state. Safe for concurrent use; Close stops its sweeper.
type Tokens struct {
	store *Store
	jwt   *jwtKeys // nil for simple tokens
	ttl   time.Duration
	lg    *slog.Logger
	// clock is set for tests; otherwise coarse is the time, in unix
	// nanoseconds, advanced by the sweeper goroutine.
	clock  func() time.Time
	coarse atomic.Int64
	// table holds simple tokens, or verified JWTs, by token string.
	table *xsync.Map[string, *tokenEntry]

	stopc chan struct{}
	donec chan struct{}
}

// NewTokens starts a token manager over s.
func NewTokens(s *Store, opts TokenOptions) *Tokens {
	if opts.TTL <= 0 {
		opts.TTL = 300 * time.Second
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = time.Second
	}
	if opts.ClockResolution <= 0 {
		opts.ClockResolution = 100 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Tokens{
		store: s,
		ttl:   opts.TTL,
		clock: opts.Now,
		lg:    opts.Logger,
		table: xsync.NewMap[string, *tokenEntry](),
		stopc: make(chan struct{}),
		donec: make(chan struct{}),
	}
	if opts.JWT != nil {
		t.jwt = opts.JWT.keys
	}
	t.coarse.Store(time.Now().UnixNano())
	go t.run(opts.SweepInterval, opts.ClockResolution)
	return t
}

// now returns the current time in unix nanoseconds: the coarse clock, or the
// test's clock.
func (t *Tokens) now() int64 {
	if t.clock != nil {
		return t.clock().UnixNano()
	}
	return t.coarse.Load()
}

// Close stops the sweeper and waits for it.
func (t *Tokens) Close() {
	select {
	case <-t.stopc:
	default:
		close(t.stopc)
	}
	<-t.donec
}

func (t *Tokens) run(sweepEvery, tick time.Duration) {
	defer close(t.donec)
	tk := time.NewTicker(min(tick, sweepEvery))
	defer tk.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-t.stopc:
			return
		case now := <-tk.C:
			t.coarse.Store(time.Now().UnixNano())
			if now.Sub(lastSweep) < sweepEvery {
				continue
			}
			lastSweep = now
			cur := t.now()
			t.table.DeleteMatching(func(_ string, e *tokenEntry) (bool, bool) {
				return cur >= e.expires.Load(), false
			})
		}
	}
}

// Simple reports whether tokens are simple tokens (whose random part the
// caller generates with NewSimpleTokenPrefix before Authenticate is applied).
func (t *Tokens) Simple() bool { return t.jwt == nil }

// NewSimpleTokenPrefix returns the random part of a simple token: 16
// letters from crypto/rand, as etcd's.
func NewSimpleTokenPrefix() (string, error) {
	var buf [simpleTokenLen]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", err
	}
	for i, b := range buf {
		// NB: 256 is not a multiple of 52; the slight bias costs well under
		// a bit of the token's ~91 bits of entropy.
		buf[i] = simpleTokenLetters[int(b)%len(simpleTokenLetters)]
	}
	return string(buf[:]), nil
}

// SimpleToken composes a simple token from its random prefix and a number
// that the apply loop chooses, as etcd's "<prefix>.<index>".
func SimpleToken(prefix string, index int64) string {
	return prefix + "." + strconv.FormatInt(index, 10)
}

// errTokenCollision is returned by Issue if a simple token is already in use
// (a new random prefix fixes it).
var errTokenCollision = errors.New("auth: simple token already assigned")

// ErrTokenCollision reports whether Issue failed because the token exists.
func ErrTokenCollision(err error) bool { return errors.Is(err, errTokenCollision) }

// Issue returns the token for user, authenticated at auth revision
// issuedRev: the simple token composed by apply is registered with the TTL;
// a JWT is signed.
func (t *Tokens) Issue(user string, issuedRev uint64, simpleToken string) (string, error) {
	if t.jwt != nil {
		return t.jwt.sign(user, issuedRev, time.Unix(0, t.now()))
	}
	e := &tokenEntry{user: user, issuedRev: issuedRev}
	e.expires.Store(t.now() + int64(t.ttl))
	if _, loaded := t.table.LoadOrStore(simpleToken, e); loaded {
		return "", errTokenCollision
	}
	return simpleToken, nil
}

// Resolve returns the user a token was issued to. It fails with
// ErrInvalidAuthToken for an unknown, malformed or expired token and for a
// simple token whose user was deleted, changed password or saw auth
// disabled since; a JWT in the latter case fails with ErrAuthOldRevision,
// as etcd's does after such changes. Other auth changes leave tokens valid.
// No lock is taken; a known token costs no allocation.
func (t *Tokens) Resolve(token string) (string, error) {
	now := t.now()
	e, ok := t.table.Load(token)
	if ok && now >= e.expires.Load() {
		// Expired; a cached JWT is verified again (its cache entry may end
		// before the token does).
		t.table.Delete(token)
		ok = false
	}
	if !ok {
		if t.jwt == nil {
			return "", ErrInvalidAuthToken
		}
		var err error
		if e, err = t.verifyJWT(token, now); err != nil {
			return "", err
		}
	}
	if !t.store.tokenValid(e.user, e.issuedRev) {
		if t.jwt != nil {
			return "", ErrAuthOldRevision
		}
		t.table.Delete(token)
		return "", ErrInvalidAuthToken
	}
	if t.jwt == nil {
		// Sliding TTL as etcd's, stored at most once a second so that a
		// token shared by many clients is not a contended cache line.
		if next := now + int64(t.ttl); next-e.expires.Load() >= int64(time.Second) {
			e.expires.Store(next)
		}
	}
	return e.user, nil
}

func (t *Tokens) verifyJWT(token string, now int64) (*tokenEntry, error) {
	user, rev, exp, err := t.jwt.verify(token, time.Unix(0, now))
	if err != nil {
		t.lg.Warn("invalid JWT", "err", err)
		return nil, ErrInvalidAuthToken
	}
	e := &tokenEntry{user: user, issuedRev: rev}
	limit := now + int64(maxJWTCacheAge)
	if exp.IsZero() || exp.UnixNano() > limit {
		e.expires.Store(limit)
	} else {
		e.expires.Store(exp.UnixNano())
	}
	if t.table.Size() < maxCachedJWTs {
		t.table.Store(token, e)
	}
	return e, nil
}

// Size returns the number of tokens held (simple tokens or cached JWTs).
func (t *Tokens) Size() int { return t.table.Size() }

// jwtClaims are etcd's: username, revision (the auth revision at issue)
// and exp.
func jwtClaims(user string, rev uint64, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{"username": user, "revision": rev, "exp": exp.Unix()}
}

func (k *jwtKeys) sign(user string, rev uint64, now time.Time) (string, error) {
	if k.verifyOnly {
		return "", ErrVerifyOnly
	}
	tok, err := jwt.NewWithClaims(k.method, jwtClaims(user, rev, now.Add(k.ttl))).SignedString(k.signKey)
	if err != nil {
		return "", fmt.Errorf("auth: sign JWT: %w", err)
	}
	return tok, nil
}

func (k *jwtKeys) verify(token string, now time.Time) (user string, rev uint64, exp time.Time, err error) {
	parsed, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return k.verifyKey, nil },
		jwt.WithValidMethods([]string{k.method.Alg()}), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		return "", 0, time.Time{}, err
	}
	claims, ok := parsed.Claims.(jwt.MapClaims)
	if !ok || !parsed.Valid {
		return "", 0, time.Time{}, errors.New("no claims")
	}
	user, ok = claims["username"].(string)
	if !ok {
		return "", 0, time.Time{}, errors.New("no username claim")
	}
	r, ok := claims["revision"].(float64)
	if !ok {
		return "", 0, time.Time{}, errors.New("no revision claim")
	}
	if e, err := claims.GetExpirationTime(); err == nil && e != nil {
		exp = e.Time
	}
	return user, uint64(r), exp, nil
}
