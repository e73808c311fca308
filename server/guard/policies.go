package guard

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/auth/wasmpolicy"
	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/wasmhost"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// WasmCacheDir is where compiled policies are cached, under the data dir.
const WasmCacheDir = "wasm-cache"

// policyReloadTimeout abandons a reload that has not finished (compiling a
// large Go module takes seconds, ~30 s under the race detector).
const policyReloadTimeout = 2 * time.Minute

// policySet is what the server's WebAssembly policies share across
// reloads: the host (created with the first policy), the metrics, and the
// reload lock. The policies themselves are in the current policyChain.
type policySet struct {
	host    *wasmhost.Host
	env     *wasmpolicy.Env
	metrics *policyMetrics
	// reloadMu serialises reloads (SIGHUP, the file watcher, tests).
	reloadMu sync.Mutex
	// watched are the stamps of the configuration's sources as of the
	// last reload (the file watcher compares them).
	watched map[string]fileStamp
	// cfg is the configuration of the last successful reload (or start).
	cfg *config.Config
}

// policyChain is one generation of the configuration's policies: the
// authorization chain and the admission list built from them. A request
// acquires the current generation once (acquireChain) and uses it for every
// decision it makes, so a reload never shows it half of each; a reload builds
// the next generation off the request path and swaps it in. The policies the
// next generation dropped or replaced are closed when the last request
// holding the old generation releases it.
type policyChain struct {
	authz auth.Authorizer
	// rbacOnly is set when authz is the RBAC alone, which allows everything
	// while auth is disabled: requests then skip authorization entirely.
	rbacOnly  bool
	admitters []*wasmpolicy.Admitter
	loaded    []*loadedPolicy // configuration order
	byName    map[string]*loadedPolicy
	// chainCfg is the authorization.chain it was built with.
	chainCfg []string

	// Requests holding this generation, counted only when it has policies
	// (nothing to close otherwise), on striped counters: one counter that
	// every request on every core increments would bounce its cache line
	// between cores on each request.
	refs      [chainStripes]chainRefs
	retired   atomic.Bool
	onDrained func() // set before retired
	drained   sync.Once
}

// chainStripes is the number of counters a generation's holders spread over.
const chainStripes = 32

type chainRefs struct {
	n atomic.Int64
	_ [120]byte // one counter per cache line (and its prefetched neighbour)
}

type loadedPolicy struct {
	cfg config.Policy
	p   *wasmhost.Policy
	// stamp is the module file's as it was read (stat before reading), so
	// that a change during the load is noticed by the next reload.
	stamp fileStamp
}

// fileStamp is what the watcher compares to notice a changed file.
type fileStamp struct {
	size    int64
	modTime time.Time
	exists  bool
}

func stampOf(path string) fileStamp {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{size: st.Size(), modTime: st.ModTime(), exists: true}
}

// Policies reports whether any policy is loaded, so that a request may run
// a guest's code (for as long as its deadline, or waiting for a CPU slot).
func (s *Guard) Policies() bool { return len(s.chain.Load().loaded) > 0 }

// acquireChain returns the current generation and the stripe it is held
// on, until release.
func (s *Guard) acquireChain() (*policyChain, uint32) {
	for {
		c := s.chain.Load()
		if len(c.loaded) == 0 {
			return c, 0
		}
		stripe := rand.Uint32() % chainStripes
		c.refs[stripe].n.Add(1)
		// Checked after counting: a generation retired meanwhile may have
		// been found unused and its policies closed.
		if s.chain.Load() == c {
			return c, stripe
		}
		c.release(stripe)
	}
}

// release ends a request's hold; the last one of a retired generation
// closes what it alone used.
//
// NB: the sum over the stripes is not a snapshot, but it cannot miss a
// holder: every holder counted before the generation was swapped out, so
// before retire, and every release after retire sums again, so the last
// one sees zero.
func (c *policyChain) release(stripe uint32) {
	if len(c.loaded) == 0 {
		return
	}
	c.refs[stripe].n.Add(-1)
	if c.retired.Load() && c.held() == 0 {
		c.drained.Do(c.onDrained)
	}
}

func (c *policyChain) held() int64 {
	var n int64
	for i := range c.refs {
		n += c.refs[i].n.Load()
	}
	return n
}

// retire marks a generation replaced; drained runs once no request holds
// it (at once if none does).
func (c *policyChain) retire(drained func()) {
	c.onDrained = drained
	c.retired.Store(true)
	if c.held() == 0 {
		c.drained.Do(drained)
	}
}

// openPolicies loads every configured policy (failing start-up with an
// error naming the file and problem) and builds the first generation.
func (s *Guard) openPolicies() error {
	ps := &policySet{metrics: s.newPolicyMetrics(), cfg: s.cfg}
	ps.env = &wasmpolicy.Env{
		Roles:  s.auth.UserRoles,
		Tenant: s.tenantOf,
		Audit: func(name string, hook wasmhost.Hook, d wasmhost.Decision) {
			ps.metrics.audit(name, hook, d.Verdict)
			if d.Verdict == wasmhost.Deny {
				s.lg.Info("policy in audit mode would deny", "policy", name, "hook", hook.String(), "reason", d.Reason)
			}
		},
	}
	s.policies = ps
	s.chain.Store(&policyChain{}) // for the loader's "previous generation"
	next, _, err := s.loadChain(context.Background(), s.cfg)
	if err != nil {
		return err
	}
	for _, lp := range next.loaded {
		ps.metrics.bind(lp.cfg.Name, lp.p)
	}
	s.chain.Store(next)
	ps.watched = stampAll(s.cfg.Sources())
	return nil
}

// loadChain builds the generation cfg describes. A policy whose module,
// digest, settings, limits and on_error are unchanged, and whose file is
// unchanged on disk, keeps its loaded module (and its warm pool); any other
// is loaded afresh, off the request path. Hooks, match and mode belong to
// the generation, not the module. On any failure every fresh module is
// closed and the errors (each naming the policy, file and problem) are
// returned joined: nothing changes.
func (s *Guard) loadChain(ctx context.Context, cfg *config.Config) (*policyChain, []*loadedPolicy, error) {
	ps, old := s.policies, s.chain.Load()
	var fresh []*loadedPolicy
	var errs []error
	loaded := make([]*loadedPolicy, 0, len(cfg.Policies))
	for i := range cfg.Policies {
		pc := cfg.Policies[i]
		if prev := old.byName[pc.Name]; prev != nil && sameModule(&prev.cfg, &pc) && stampOf(pc.Module) == prev.stamp {
			lp := &loadedPolicy{cfg: pc, p: prev.p, stamp: prev.stamp}
			if err := checkHooks(lp); err != nil {
				errs = append(errs, err)
			}
			loaded = append(loaded, lp)
			continue
		}
		lp, err := s.loadPolicy(ctx, pc, s.cfg.Limits.MaxRequestBytes) // limits take a restart
		if err != nil {
			errs = append(errs, err)
			if old.byName[pc.Name] != nil {
				ps.metrics.reloaded(pc.Name, false)
			}
			continue
		}
		fresh = append(fresh, lp)
		loaded = append(loaded, lp)
	}
	if len(errs) > 0 {
		for _, lp := range fresh {
			lp.p.Close()
		}
		return nil, nil, errors.Join(errs...)
	}
	return s.buildChain(cfg, loaded), fresh, nil
}

// sameModule reports whether b can keep a's loaded module.
func sameModule(a, b *config.Policy) bool {
	return a.Module == b.Module && strings.EqualFold(a.SHA256, b.SHA256) && string(a.Settings) == string(b.Settings) &&
		a.Limits == b.Limits && a.OnError == b.OnError
}

func (s *Guard) loadPolicy(ctx context.Context, pc config.Policy, maxReq int) (*loadedPolicy, error) {
	hc, err := HostConfig(&pc, maxReq)
	if err != nil {
		return nil, fmt.Errorf("policy %q: %w", pc.Name, err)
	}
	ps := s.policies
	if ps.host == nil {
		host, err := wasmhost.NewHost(wasmhost.Options{
			CacheDir: filepath.Join(s.cfg.DataDir, WasmCacheDir),
			Events:   ps.metrics.events(s.lg.With("component", "policy")),
		})
		if err != nil {
			return nil, err
		}
		ps.host = host
	}
	hc.Observe = ps.metrics.observer(pc.Name)
	stamp := stampOf(pc.Module)
	start := time.Now()
	p, err := ps.host.Load(ctx, hc)
	if err != nil {
		return nil, err
	}
	lp := &loadedPolicy{cfg: pc, p: p, stamp: stamp}
	if err := checkHooks(lp); err != nil {
		p.Close()
		return nil, err
	}
	s.lg.Info("loaded policy", "policy", pc.Name, "module", pc.Module, "sha256", p.SHA256(),
		"hooks", pc.Hooks, "mode", pc.Mode, "took", time.Since(start))
	return lp, nil
}

// checkHooks refuses a policy configured for a hook its module lacks.
func checkHooks(lp *loadedPolicy) error {
	for _, hook := range lp.cfg.Hooks {
		h := wasmhost.HookAuthorize
		if hook == "admit" {
			h = wasmhost.HookAdmit
		}
		if !lp.p.Has(h) {
			return fmt.Errorf("policy %q (%s): configured for %s but the module does not export policy_%s", lp.cfg.Name, lp.cfg.Module, hook, hook)
		}
	}
	return nil
}

// buildChain puts loaded policies into the authorization chain in the
// configured order, and their admission hooks into the admission list.
func (s *Guard) buildChain(cfg *config.Config, loaded []*loadedPolicy) *policyChain {
	c := &policyChain{loaded: loaded, byName: make(map[string]*loadedPolicy, len(loaded)), chainCfg: cfg.Authorization.Chain}
	env := s.policies.env
	var authorizers auth.Chain
	for _, lp := range loaded {
		c.byName[lp.cfg.Name] = lp
		pc := &lp.cfg
		match := wasmpolicy.Match{Users: pc.Match.Users, Roles: pc.Match.Roles}
		for _, pre := range pc.Match.Prefixes {
			match.Prefixes = append(match.Prefixes, []byte(pre))
		}
		audit := pc.Mode == "audit"
		if pc.HasHook("authorize") {
			authorizers = append(authorizers, &wasmpolicy.Authorizer{Policy: lp.p, Match: match, Audit: audit, Env: env})
		}
		if pc.HasHook("admit") {
			c.admitters = append(c.admitters, &wasmpolicy.Admitter{Policy: lp.p, Match: match, Audit: audit, Env: env})
		}
	}
	chain := auth.Chain{}
	for _, m := range cfg.Authorization.Chain {
		switch m {
		case "policies":
			chain = append(chain, authorizers...)
		case "rbac":
			chain = append(chain, s.auth)
		}
	}
	c.authz = chain
	c.rbacOnly = len(chain) == 1 && len(authorizers) == 0 && slices.Contains(cfg.Authorization.Chain, "rbac")
	return c
}

// sameChain reports whether two generations would decide alike: the same
// modules in the same order with the same configuration.
func sameChain(a, b *policyChain) bool {
	if len(a.loaded) != len(b.loaded) || !slices.Equal(a.chainCfg, b.chainCfg) {
		return false
	}
	for i := range a.loaded {
		if a.loaded[i].p != b.loaded[i].p || !reflect.DeepEqual(a.loaded[i].cfg, b.loaded[i].cfg) {
			return false
		}
	}
	return true
}

func (ps *policySet) close(c *policyChain) {
	if ps == nil {
		return
	}
	if c != nil {
		for _, lp := range c.loaded {
			lp.p.Close()
		}
	}
	if ps.host != nil {
		ps.host.Close(context.Background())
	}
}

// ReloadConfig applies the policies, authorization chain and tenants of cfg
// (a re-read configuration; nil re-reads the current policies' files)
// without a restart and without dropping a request: policies are added,
// removed and changed (module, settings, limits, on_error, hooks, match,
// mode), each changed module compiled, checked and initialised off the
// request path; then the new generation is swapped in at once. Requests in
// flight finish on the generation they started with; modules no longer used
// are closed when the last of them ends. Tenants' quotas and rate limits
// change in place and their usage counts are kept (a new tenant is counted).
// If anything in cfg fails to load, nothing changes: the old configuration
// keeps serving and the errors, each naming the policy, file and problem, are
// logged, counted and returned joined. Other settings take a restart.
func (s *Guard) ReloadConfig(ctx context.Context, cfg *config.Config) error {
	ps := s.policies
	ps.reloadMu.Lock()
	defer ps.reloadMu.Unlock()
	// NB: every step of a load is bounded (the init deadline covers start,
	// _initialize and policy_init), but a reload that still cannot finish
	// is abandoned rather than holding reloadMu, which the next one waits on.
	ctx, cancel := context.WithTimeout(ctx, policyReloadTimeout)
	defer cancel()
	if cfg == nil {
		c := *ps.cfg
		cfg = &c
	}
	err := s.reload(ctx, cfg)
	s.metrics.reloaded(err == nil)
	return err
}

func (s *Guard) reload(ctx context.Context, cfg *config.Config) error {
	ps := s.policies
	old := s.chain.Load()
	next, fresh, err := s.loadChain(ctx, cfg)
	if err != nil {
		s.lg.Error("reload refused; the previous policies and tenants keep serving", "err", err)
		return err
	}
	if err := s.reloadTenants(ctx, cfg.Tenants); err != nil {
		for _, lp := range fresh {
			lp.p.Close()
		}
		s.lg.Error("reload refused; the previous policies and tenants keep serving", "err", err)
		return err
	}
	if s.applyLive != nil {
		s.applyLive(cfg) // the member's: rate limits, log settings...; reports what takes a restart
	}
	ps.cfg = cfg
	if sameChain(old, next) {
		s.lg.Info("reload: policies unchanged")
		return nil
	}
	var added, changed, removed []string
	for _, lp := range fresh {
		ps.metrics.bind(lp.cfg.Name, lp.p)
		if prev := old.byName[lp.cfg.Name]; prev != nil {
			changed = append(changed, lp.cfg.Name)
			ps.metrics.reloaded(lp.cfg.Name, true)
			s.lg.Info("reloaded policy", "policy", lp.cfg.Name, "module", lp.cfg.Module, "sha256", lp.p.SHA256())
		} else {
			added = append(added, lp.cfg.Name)
		}
	}
	inNext := make(map[*wasmhost.Policy]bool, len(next.loaded))
	for _, lp := range next.loaded {
		inNext[lp.p] = true
		if prev := old.byName[lp.cfg.Name]; prev != nil && prev.p == lp.p && !reflect.DeepEqual(prev.cfg, lp.cfg) {
			changed = append(changed, lp.cfg.Name)
		}
	}
	var retire []*wasmhost.Policy
	for _, lp := range old.loaded {
		if !inNext[lp.p] {
			retire = append(retire, lp.p)
		}
		if next.byName[lp.cfg.Name] == nil {
			removed = append(removed, lp.cfg.Name)
			ps.metrics.unbind(lp.cfg.Name)
		}
	}
	s.chain.Store(next)
	old.retire(func() {
		for _, p := range retire {
			p.Close()
		}
	})
	s.lg.Info("reloaded policies", "added", added, "changed", changed, "removed", removed, "chain", cfg.Authorization.Chain)
	return nil
}

// stampAll stamps each path.
func stampAll(paths []string) map[string]fileStamp {
	m := make(map[string]fileStamp, len(paths))
	for _, p := range paths {
		m[p] = stampOf(p)
	}
	return m
}

// watchPolicies polls the configuration's sources (the config file, the
// policy and tenant files and directories, the modules) and reloads
// (through reload, which re-reads the configuration) when one changed. A
// change that fails to load is not retried until a source changes again.
func (s *Guard) watchPolicies(ctx context.Context, reload func(context.Context) error) {
	every := s.cfg.Authorization.PolicyWatchInterval
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ps := s.policies
		ps.reloadMu.Lock()
		before := ps.watched
		now := stampAll(ps.cfg.Sources())
		ps.watched = now
		ps.reloadMu.Unlock()
		if maps.Equal(now, before) {
			continue
		}
		s.lg.Info("a configuration file or policy module changed; reloading")
		if err := reload(ctx); err != nil {
			s.lg.Error("reload after a file change", "err", err)
			continue
		}
		// Watch the sources of the configuration now serving (those read
		// for this reload keep the stamps taken before it).
		ps.reloadMu.Lock()
		watched := map[string]fileStamp{}
		for _, p := range ps.cfg.Sources() {
			if st, ok := now[p]; ok {
				watched[p] = st
			} else {
				watched[p] = stampOf(p)
			}
		}
		ps.watched = watched
		ps.reloadMu.Unlock()
	}
}

// Admission. Each admit policy in configuration order sees the write as
// it stands after the ones before; a mutation is checked like a client
// request (edge checks, size), authorized again — a mutation never moves a
// write outside what the caller may touch — and handed on.

// errBadMutation wraps a mutation that is not a valid request of the
// admitted type.
var errBadMutation = errors.New("invalid mutation")

// hasAdmission reports whether id's generation has admission policies.
func hasAdmission(id Identity) bool { return id.chain != nil && len(id.chain.admitters) > 0 }

// admission runs the admit chain over a message. Describe gives the
// message's ranges; decode parses a mutation and check validates it; the
// mutation is then authorized again.
func admission[M interface {
	Marshal() ([]byte, error)
	Size() int
}](ctx context.Context, s *Guard, id Identity, kind wasmhost.AdmitKind, cur M,
	decode func([]byte) (M, error), check func(M) error) (M, error) {
	for _, ad := range id.chain.admitters {
		msg, err := cur.Marshal()
		if err != nil {
			return cur, err
		}
		ar := authRequests.Get().(*auth.Request)
		Describe(ar, id.User, cur, s)
		d, err := ad.Admit(ctx, ar, kind, msg)
		ar.Release()
		authRequests.Put(ar)
		if err != nil {
			return cur, err
		}
		if d.Verdict != wasmhost.Mutated {
			continue
		}
		next, err := decode(d.Mutation)
		if err == nil {
			err = check(next)
		}
		if err == nil {
			err = s.checkRequestSize(next.Size())
		}
		if err != nil {
			return cur, &wasmpolicy.DenyError{Policy: ad.Policy.Name(), Hook: wasmhost.HookAdmit,
				Reason: fmt.Sprintf("%v: %v", errBadMutation, err)}
		}
		if err := s.authorize(ctx, id, next); err != nil {
			return cur, err
		}
		s.policies.metrics.mutated(ad.Policy.Name())
		cur = next
	}
	return cur, nil
}

func (s *Guard) admitPut(ctx context.Context, id Identity, r *pb.PutRequest) (*pb.PutRequest, error) {
	return admission(ctx, s, id, policyabi.AdmitPut, r,
		func(b []byte) (*pb.PutRequest, error) { m := &pb.PutRequest{}; return m, m.Unmarshal(b) },
		s.validate.Put)
}

func (s *Guard) admitDeleteRange(ctx context.Context, id Identity, r *pb.DeleteRangeRequest) (*pb.DeleteRangeRequest, error) {
	return admission(ctx, s, id, policyabi.AdmitDeleteRange, r,
		func(b []byte) (*pb.DeleteRangeRequest, error) {
			m := &pb.DeleteRangeRequest{}
			return m, m.Unmarshal(b)
		},
		s.validate.DeleteRange)
}

func (s *Guard) admitTxn(ctx context.Context, id Identity, r *pb.TxnRequest) (*pb.TxnRequest, error) {
	return admission(ctx, s, id, policyabi.AdmitTxn, r,
		func(b []byte) (*pb.TxnRequest, error) { m := &pb.TxnRequest{}; return m, m.Unmarshal(b) },
		s.validate.Txn)
}
