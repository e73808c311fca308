package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/auth/wasmpolicy"
	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/policycmd"
	"github.com/metastore-dev/metastore/wasmhost"
)

// wasmCacheDir is where compiled policies are cached, under the data dir.
const wasmCacheDir = "wasm-cache"

// policySet is the server's WebAssembly policies: the host, each loaded
// policy, and the chain members built from them.
type policySet struct {
	host       *wasmhost.Host
	loaded     []*loadedPolicy
	byName     map[string]*loadedPolicy
	admitters  []*wasmpolicy.Admitter
	env        *wasmpolicy.Env
	metrics    *policyMetrics
	reloadMu   sync.Mutex
	lastStamps map[string]fileStamp
}

type loadedPolicy struct {
	cfg config.Policy
	p   *wasmhost.Policy
}

// fileStamp is what the watcher compares to notice a changed module.
type fileStamp struct {
	size    int64
	modTime time.Time
}

// openPolicies loads every configured policy (failing start-up with an
// error naming the file and problem) and builds the authorization chain in
// the configured order.
func (s *Server) openPolicies() error {
	chain := auth.Chain{}
	if len(s.cfg.Policies) == 0 {
		for _, m := range s.cfg.Authorization.Chain {
			if m == "rbac" {
				chain = append(chain, s.auth)
			}
		}
		s.authz, s.rbacOnly = chain, len(chain) == 1
		return nil
	}
	ps := &policySet{byName: map[string]*loadedPolicy{}, metrics: s.newPolicyMetrics()}
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
	host, err := wasmhost.NewHost(wasmhost.Options{
		CacheDir: filepath.Join(s.cfg.DataDir, wasmCacheDir),
		Events:   ps.metrics.events(s.lg.With("component", "policy")),
	})
	if err != nil {
		return err
	}
	ps.host = host
	s.policies = ps
	var authorizers auth.Chain
	for i := range s.cfg.Policies {
		pc := s.cfg.Policies[i]
		hc, err := policycmd.HostConfig(&pc, s.cfg.Limits.MaxRequestBytes)
		if err != nil {
			return fmt.Errorf("policy %q: %w", pc.Name, err)
		}
		start := time.Now()
		p, err := host.Load(context.Background(), hc)
		if err != nil {
			return err
		}
		for _, hook := range pc.Hooks {
			h := wasmhost.HookAuthorize
			if hook == "admit" {
				h = wasmhost.HookAdmit
			}
			if !p.Has(h) {
				p.Close()
				return fmt.Errorf("policy %q (%s): configured for %s but the module does not export policy_%s", pc.Name, pc.Module, hook, hook)
			}
		}
		lp := &loadedPolicy{cfg: pc, p: p}
		ps.loaded = append(ps.loaded, lp)
		ps.byName[pc.Name] = lp
		ps.metrics.loaded(pc.Name, p)
		match := wasmpolicy.Match{Users: pc.Match.Users, Roles: pc.Match.Roles}
		for _, pre := range pc.Match.Prefixes {
			match.Prefixes = append(match.Prefixes, []byte(pre))
		}
		audit := pc.Mode == "audit"
		if pc.HasHook("authorize") {
			authorizers = append(authorizers, &wasmpolicy.Authorizer{Policy: p, Match: match, Audit: audit, Env: ps.env})
		}
		if pc.HasHook("admit") {
			ps.admitters = append(ps.admitters, &wasmpolicy.Admitter{Policy: p, Match: match, Audit: audit, Env: ps.env})
		}
		s.lg.Info("loaded policy", "policy", pc.Name, "module", pc.Module, "sha256", p.SHA256(),
			"hooks", pc.Hooks, "mode", pc.Mode, "took", time.Since(start))
	}
	for _, m := range s.cfg.Authorization.Chain {
		switch m {
		case "policies":
			chain = append(chain, authorizers...)
		case "rbac":
			chain = append(chain, s.auth)
		}
	}
	s.authz = chain
	s.rbacOnly = len(chain) == 1 && len(authorizers) == 0 && slices.Contains(s.cfg.Authorization.Chain, "rbac")
	ps.lastStamps = ps.stamps()
	return nil
}

func (ps *policySet) close() {
	if ps == nil {
		return
	}
	for _, lp := range ps.loaded {
		lp.p.Close()
	}
	ps.host.Close(context.Background())
}

func (ps *policySet) stamps() map[string]fileStamp {
	m := make(map[string]fileStamp, len(ps.loaded))
	for _, lp := range ps.loaded {
		if st, err := os.Stat(lp.cfg.Module); err == nil {
			m[lp.cfg.Name] = fileStamp{size: st.Size(), modTime: st.ModTime()}
		}
	}
	return m
}

// ReloadPolicies reloads the policies from cfg (the re-read configuration;
// nil reloads the policies as currently configured): each policy whose module, digest, settings,
// limits or on_error changed, or whose file changed on disk, is compiled,
// checked and initialised off the request path and swapped in; a module
// that fails leaves the old one serving, and the failure is logged and
// counted. Adding or removing policies, or changing hooks, match or mode,
// takes a restart (the chain is fixed at start-up); those differences are
// logged. It returns the errors joined.
func (s *Server) ReloadPolicies(ctx context.Context, cfg *config.Config) error {
	ps := s.policies
	if ps == nil {
		if cfg != nil && len(cfg.Policies) > 0 {
			s.lg.Warn("policies were added to the configuration; they take effect after a restart")
		}
		return nil
	}
	ps.reloadMu.Lock()
	defer ps.reloadMu.Unlock()
	// Without a fresh configuration, the policies as loaded now are
	// reloaded (their files may have changed).
	pols, maxReq := make([]config.Policy, 0, len(ps.loaded)), s.cfg.Limits.MaxRequestBytes
	if cfg != nil {
		pols, maxReq = cfg.Policies, cfg.Limits.MaxRequestBytes
	} else {
		for _, lp := range ps.loaded {
			pols = append(pols, lp.cfg)
		}
	}
	stamps := ps.stamps()
	var errs []error
	seen := map[string]bool{}
	for i := range pols {
		pc := pols[i]
		seen[pc.Name] = true
		lp := ps.byName[pc.Name]
		if lp == nil {
			s.lg.Warn("policy added to the configuration; it takes effect after a restart", "policy", pc.Name)
			continue
		}
		if !slices.Equal(pc.Hooks, lp.cfg.Hooks) || pc.Mode != lp.cfg.Mode || !slices.Equal(pc.Match.Prefixes, lp.cfg.Match.Prefixes) ||
			!slices.Equal(pc.Match.Users, lp.cfg.Match.Users) || !slices.Equal(pc.Match.Roles, lp.cfg.Match.Roles) {
			s.lg.Warn("policy hooks, match or mode changed; they take effect after a restart", "policy", pc.Name)
		}
		changed := pc.Module != lp.cfg.Module || pc.SHA256 != lp.cfg.SHA256 || string(pc.Settings) != string(lp.cfg.Settings) ||
			pc.Limits != lp.cfg.Limits || pc.OnError != lp.cfg.OnError || stamps[pc.Name] != ps.lastStamps[pc.Name]
		if !changed {
			continue
		}
		hc, err := policycmd.HostConfig(&pc, maxReq)
		if err == nil {
			err = lp.p.Reload(ctx, hc)
		}
		if err != nil {
			s.lg.Error("policy reload failed; the previous module keeps serving", "policy", pc.Name, "err", err)
			errs = append(errs, err)
			continue
		}
		s.lg.Info("reloaded policy", "policy", pc.Name, "module", pc.Module, "sha256", lp.p.SHA256())
		// Hooks, match and mode stay as started.
		pc.Hooks, pc.Match, pc.Mode = lp.cfg.Hooks, lp.cfg.Match, lp.cfg.Mode
		lp.cfg = pc
	}
	for name := range ps.byName {
		if !seen[name] {
			s.lg.Warn("policy removed from the configuration; it keeps running until a restart", "policy", name)
		}
	}
	ps.lastStamps = stamps
	return errors.Join(errs...)
}

// watchPolicies polls the module files and reloads (through reload, which
// re-reads the configuration) when one changed.
func (s *Server) watchPolicies(ctx context.Context, reload func(context.Context) error) {
	every := s.cfg.Authorization.PolicyWatchInterval
	if s.policies == nil || every <= 0 {
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
		s.policies.reloadMu.Lock()
		now := s.policies.stamps()
		changed := !mapsEqual(now, s.policies.lastStamps)
		s.policies.reloadMu.Unlock()
		if changed {
			s.lg.Info("a policy module changed on disk; reloading")
			if err := reload(ctx); err != nil {
				s.lg.Error("policy reload after a file change", "err", err)
			}
		}
	}
}

func mapsEqual(a, b map[string]fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Admission. Each admit policy in configuration order sees the write as
// it stands after the ones before; a mutation is checked like a client
// request (edge checks, size), authorized again — a mutation never moves a
// write outside what the caller may touch — and handed on.

// errBadMutation wraps a mutation that is not a valid request of the
// admitted type.
var errBadMutation = errors.New("invalid mutation")

func (s *Server) hasAdmission() bool { return s.policies != nil && len(s.policies.admitters) > 0 }

// admission runs the admit chain over a message. fill adds the message's
// ranges to an auth.Request; decode parses a mutation and check validates
// it; authorize re-authorizes it.
func admission[M interface {
	Marshal() ([]byte, error)
	Size() int
}](ctx context.Context, s *Server, id identity, op auth.Op, kind wasmhost.AdmitKind, cur M,
	fill func(*auth.Request, M), decode func([]byte) (M, error), check func(M) error) (M, error) {
	for _, ad := range s.policies.admitters {
		msg, err := cur.Marshal()
		if err != nil {
			return cur, err
		}
		ar := authRequests.Get().(*auth.Request)
		ar.Reset(op, id.user)
		fill(ar, cur)
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
		if err := s.authorizeKV(ctx, id, op, func(ar *auth.Request) { fill(ar, next) }); err != nil {
			return cur, err
		}
		s.policies.metrics.mutated(ad.Policy.Name())
		cur = next
	}
	return cur, nil
}

func (s *Server) admitPut(ctx context.Context, id identity, r *pb.PutRequest) (*pb.PutRequest, error) {
	return admission(ctx, s, id, auth.OpPut, wasmhost.AdmitPut, r,
		func(ar *auth.Request, m *pb.PutRequest) {
			if m.PrevKv {
				ar.Flags = auth.FlagPrevKV
			}
			s.addPut(ar, id, m)
		},
		func(b []byte) (*pb.PutRequest, error) { m := &pb.PutRequest{}; return m, m.Unmarshal(b) },
		checkPutRequest)
}

func (s *Server) admitDeleteRange(ctx context.Context, id identity, r *pb.DeleteRangeRequest) (*pb.DeleteRangeRequest, error) {
	return admission(ctx, s, id, auth.OpDeleteRange, wasmhost.AdmitDeleteRange, r,
		addDeleteRange,
		func(b []byte) (*pb.DeleteRangeRequest, error) {
			m := &pb.DeleteRangeRequest{}
			return m, m.Unmarshal(b)
		},
		checkDeleteRequest)
}

func (s *Server) admitTxn(ctx context.Context, id identity, r *pb.TxnRequest) (*pb.TxnRequest, error) {
	return admission(ctx, s, id, auth.OpTxn, wasmhost.AdmitTxn, r,
		func(ar *auth.Request, m *pb.TxnRequest) { s.addTxn(ar, id, m) },
		func(b []byte) (*pb.TxnRequest, error) { m := &pb.TxnRequest{}; return m, m.Unmarshal(b) },
		func(m *pb.TxnRequest) error {
			if err := checkTxnRequest(m, s.cfg.Limits.MaxTxnOps); err != nil {
				return err
			}
			if _, _, err := checkIntervals(m.Success); err != nil {
				return err
			}
			_, _, err := checkIntervals(m.Failure)
			return err
		})
}

// addDeleteRange adds what a delete needs as etcd checks it.
func addDeleteRange(ar *auth.Request, r *pb.DeleteRangeRequest) {
	ar.Add(auth.PermWrite, r.Key, r.RangeEnd)
	if r.PrevKv {
		ar.Flags = auth.FlagPrevKV
		ar.Add(auth.PermRead, r.Key, r.RangeEnd)
	}
}

// policyDenial maps a policy's denial to the wire: an authorization denial
// is etcd's permission-denied code with the policy's reason appended to
// etcd's message; an admission denial is FailedPrecondition (the write is
// well-formed and permitted, but a rule refuses it).
func policyDenial(err error) (error, bool) {
	var de *wasmpolicy.DenyError
	if !errors.As(err, &de) {
		return nil, false
	}
	if de.Hook == wasmhost.HookAuthorize {
		return status.Error(codes.PermissionDenied, fmt.Sprintf("etcdserver: permission denied: policy %q: %s", de.Policy, de.Reason)), true
	}
	return status.Error(codes.FailedPrecondition, fmt.Sprintf("etcdserver: request rejected by policy %q: %s", de.Policy, de.Reason)), true
}
