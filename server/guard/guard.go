package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/config"
)

// Domain errors of the guard; the RPC layer's error table maps them to
// etcd's wire errors.
var (
	// ErrTooManyRequests is a request refused by a rate limit (global,
	// per user or per tenant).
	ErrTooManyRequests = errors.New("guard: too many requests")
	// ErrRequestTooLarge is a write larger than --max-request-bytes.
	ErrRequestTooLarge = errors.New("etcdserver: request is too large")
)

// QuotaError is a write refused by a tenant's quota.
type QuotaError struct {
	Tenant      string
	What        string // "keys" or "bytes"
	Used, Limit int64  // what the write would make it, and the quota
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("etcdserver: tenant %q quota exceeded: %s would be %d, max %d", e.Tenant, e.What, e.Used, e.Limit)
}

// TenantCounter replaces the tenants apply counts (apply.Loop.SetTenants).
type TenantCounter interface {
	SetTenants(ctx context.Context, tenants []apply.Tenant) error
}

// Validators check a request as a client sent it; admission checks every
// mutation a policy makes with them (the RPC layer owns validation).
type Validators struct {
	Put         func(*pb.PutRequest) error
	DeleteRange func(*pb.DeleteRangeRequest) error
	Txn         func(*pb.TxnRequest) error
}

// Metrics are the server's collectors the guard feeds.
type Metrics struct {
	// Registry receives the per-policy metrics.
	Registry *prometheus.Registry
	// RateLimited counts refused requests by scope (global, user, tenant).
	RateLimited *prometheus.CounterVec
	// Reloaded counts a configuration reload.
	Reloaded func(ok bool)
}

// Options are what a Guard decides with.
type Options struct {
	Config *config.Config
	Logger *slog.Logger
	Auth   *auth.Store
	Tokens *auth.Tokens
	// Applier answers alarms and the tenants' usage (derived at apply).
	Applier *apply.Applier
	// Counter recounts the tenants of a reload on the apply goroutine.
	Counter TenantCounter
	// Store serves the reads quota checks make.
	Store *mvcc.Store
	// LeaseKeys returns the keys attached to a lease; nil: no lease has keys.
	LeaseKeys func(id int64) [][]byte
	Validate  Validators
	Metrics   Metrics
	// ApplyLive applies the other reloadable settings of a reload (the
	// member's: rate limits, connection limit, slow-request threshold, log
	// settings) once its policies and tenants are known to load, under the
	// reload lock, before Metrics.Reloaded counts it; nil: none.
	ApplyLive func(next *config.Config)
	// CatchUp, on a cluster member, waits until this member has applied
	// what the cluster committed (a ReadIndex round): a simple token
	// issued on another member just now is registered once this member
	// applies the authentication. Nil on a single member.
	CatchUp func(ctx context.Context) error
}

// Guard is the request guard of one member. It is safe for concurrent use.
type Guard struct {
	cfg      *config.Config
	lg       *slog.Logger
	auth     *auth.Store
	tokens   *auth.Tokens
	applier  *apply.Applier
	counter  TenantCounter
	store    *mvcc.Store
	validate Validators
	metrics  guardMetrics

	// chain is the current generation of the authorization chain
	// (configured policies, then the built-in RBAC) and admission list;
	// requests hold one with acquireChain. Replaced whole by a reload.
	chain atomic.Pointer[policyChain]
	// policies is what the WebAssembly policies share across reloads.
	policies *policySet
	// reloadConfig re-reads the configuration for a policy reload (set by
	// the command; nil reloads with the current one).
	reloadConfig func() (*config.Config, error)
	// leaseKeys returns the keys attached to a lease (set by the lessor).
	leaseKeys func(id int64) [][]byte
	// applyLive applies a reload's other live settings (Options.ApplyLive).
	applyLive func(next *config.Config)
	catchUp   func(ctx context.Context) error
	rates     *rateLimits               // global, per-user, unary and stream buckets (ratelimit.go)
	tenants   atomic.Pointer[tenantSet] // nil: no tenants configured; replaced by a reload
}

type guardMetrics struct {
	reg         *prometheus.Registry
	rateLimited *prometheus.CounterVec
	onReload    func(bool)
}

func (m guardMetrics) reloaded(ok bool) {
	if m.onReload != nil {
		m.onReload(ok)
	}
}

// New loads the configured policies (failing with an error naming the file
// and problem) and sets up the rate limits and tenants.
func New(o Options) (*Guard, error) {
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	reg := o.Metrics.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Guard{
		cfg: o.Config, lg: lg, auth: o.Auth, tokens: o.Tokens, applier: o.Applier, counter: o.Counter,
		store: o.Store, validate: o.Validate, leaseKeys: o.LeaseKeys, applyLive: o.ApplyLive, catchUp: o.CatchUp,
		metrics: guardMetrics{reg: reg, rateLimited: o.Metrics.RateLimited, onReload: o.Metrics.Reloaded},
	}
	if s.metrics.rateLimited == nil {
		s.metrics.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rate_limited"}, []string{"scope"})
	}
	s.rates = newRateLimits(o.Config.Limits, s.metrics.rateLimited, reg)
	if err := s.openPolicies(); err != nil {
		return nil, err
	}
	s.tenants.Store(newTenantSet(o.Config.Tenants, nil))
	return s, nil
}

// Close closes the policies of the current generation and the policy host.
func (s *Guard) Close() {
	s.policies.close(s.chain.Load())
}

// SetConfigReloader gives the guard the function that re-reads the
// configuration when it is reloaded (on SIGHUP or a changed file).
func (s *Guard) SetConfigReloader(f func() (*config.Config, error)) { s.reloadConfig = f }

// Reload re-reads the configuration (through the reloader, if set) and
// applies its policies and tenants; see ReloadConfig. An invalid
// configuration changes nothing; it is logged and counted.
func (s *Guard) Reload(ctx context.Context) error {
	var cfg *config.Config
	if s.reloadConfig != nil {
		c, err := s.reloadConfig()
		if err != nil {
			s.lg.Error("reload refused: the configuration is invalid; the previous policies and tenants keep serving", "err", err)
			s.metrics.reloaded(false)
			return err
		}
		cfg = c
	}
	return s.ReloadConfig(ctx, cfg)
}

// Run watches the configuration's files until ctx ends, reloading on a
// change (every authorization.policy_watch_interval; never when it is 0).
func (s *Guard) Run(ctx context.Context) { s.watchPolicies(ctx, s.Reload) }

// ApplyTenants is the tenants list as apply counts it.
func ApplyTenants(ts []config.Tenant) []apply.Tenant {
	out := make([]apply.Tenant, len(ts))
	for i, t := range ts {
		out[i] = apply.Tenant{Name: t.Name, Prefix: []byte(t.Prefix)}
	}
	return out
}
