package config

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// Authorization orders the authorization chain.
type Authorization struct {
	// Chain lists the authorizers in order: "policies" (the wasm policies
	// with the authorize hook, each matched by prefix, user and role) and
	// "rbac" (etcd's built-in RBAC). The first Allow or Deny wins; when
	// every member has no opinion the request is denied.
	Chain []string `yaml:"chain"`
	// PolicyWatchInterval is how often the config file, the policy and
	// tenant files and the policy modules are checked for changes (a change
	// reloads the policies and tenants as SIGHUP does); 0 disables.
	PolicyWatchInterval time.Duration `yaml:"policy_watch_interval"`
}

// Policy configures one WebAssembly policy (a `policies:` entry, in the
// config file or in PolicyConfig's files).
type Policy struct {
	// Name tags the policy's metrics and log lines.
	Name string `yaml:"name"`
	// Module is the .wasm file; a relative path is relative to the config
	// file's directory.
	Module string `yaml:"module"`
	// SHA256 is the module's hex digest; a mismatch refuses to load.
	SHA256 string `yaml:"sha256"`
	// Hooks are "authorize" and/or "admit".
	Hooks []string `yaml:"hooks"`
	// Match selects the requests the policy sees.
	Match PolicyMatch `yaml:"match"`
	// Settings are handed to policy_init as JSON.
	Settings json.RawMessage `yaml:"settings" config:"json"`
	// OnError decides a failed call: deny or reject (the default; fail
	// closed), no_opinion or ignore (fail open).
	OnError string `yaml:"on_error"`
	// Mode is "enforce" (the default) or "audit": the verdict is logged and
	// counted, and the rest of the chain decides.
	Mode string `yaml:"mode"`
	// Limits override the host's defaults.
	Limits PolicyLimits `yaml:"limits"`
}

// PolicyMatch selects requests: a request matches when one of its key
// ranges overlaps one of Prefixes (every request when empty), and, when
// set, its user is one of Users or has one of Roles.
type PolicyMatch struct {
	Prefixes []string `yaml:"prefixes"`
	Users    []string `yaml:"users"`
	Roles    []string `yaml:"roles"`
}

// PolicyLimits bound one policy; zero keeps the default.
type PolicyLimits struct {
	// Memory caps an instance's linear memory (default 16MiB).
	Memory int64 `yaml:"memory" unit:"bytes"`
	// ModuleSize caps the .wasm file (default 32MiB).
	ModuleSize int64 `yaml:"module_size" unit:"bytes"`
	// AuthorizeTimeout, AdmitTimeout and InitTimeout are per-call deadlines
	// (defaults 5ms, 20ms, 1s).
	AuthorizeTimeout time.Duration `yaml:"authorize_timeout"`
	AdmitTimeout     time.Duration `yaml:"admit_timeout"`
	InitTimeout      time.Duration `yaml:"init_timeout"`
	// PoolWait bounds how long a call queues for an idle instance
	// (default 1s); the guest's deadline counts from when it runs.
	PoolWait time.Duration `yaml:"pool_wait"`
	// Instances is the warm pool size (default GOMAXPROCS).
	Instances int `yaml:"instances"`
	// ReasonBytes caps a denial reason (default 1KiB).
	ReasonBytes int `yaml:"reason_bytes" unit:"bytes"`
	// Fuel is a per-call work budget in fuel units (about one guest loop
	// iteration each; 0 = none, the deadline alone).
	Fuel int64 `yaml:"fuel"`
	// Structural limits on the module (checked before it is compiled):
	// code section size (default 8MiB), functions (20000), globals
	// (1000), locals of one function (10000), tables (8) and elements of
	// one table (100000; table.grow past it fails).
	CodeSize          int64 `yaml:"code_size" unit:"bytes"`
	Functions         int   `yaml:"functions"`
	Globals           int   `yaml:"globals"`
	LocalsPerFunction int   `yaml:"locals_per_function"`
	Tables            int   `yaml:"tables"`
	TableElements     int   `yaml:"table_elements"`
	// StackSize and CallDepth bound a call's stack (defaults 2MiB, 10000).
	StackSize int64 `yaml:"stack_size" unit:"bytes"`
	CallDepth int   `yaml:"call_depth"`
	// TotalMemory bounds instances × (memory + tables + stack) (default
	// 4GiB; with instances 0 the pool shrinks to fit).
	TotalMemory int64 `yaml:"total_memory" unit:"bytes"`
	// What a module may cost the compiler (checked before it runs): one
	// function body (default 256KiB), the locals of all functions
	// (100000), one function's blocks (5000) and the compile cost, the sum
	// over functions of blocks² + blocks × locals² / 16 (100000000).
	FunctionBytes     int64 `yaml:"function_bytes" unit:"bytes"`
	Locals            int64 `yaml:"locals"`
	BlocksPerFunction int   `yaml:"blocks_per_function"`
	CompileCost       int64 `yaml:"compile_cost"`
}

// Tenant is a configured tenant (a `tenants:` entry): the owner of a key
// prefix with its quota and rate limit.
type Tenant struct {
	Name   string `yaml:"name"`
	Prefix string `yaml:"prefix"`
	// Quota caps the tenant's keys and bytes (keys plus values); 0 is
	// unlimited.
	Quota TenantQuota `yaml:"quota"`
	// RateLimit caps the tenant's requests per second; qps 0 is unlimited.
	RateLimit TenantRateLimit `yaml:"rate_limit"`
}

// TenantQuota caps a tenant's usage.
type TenantQuota struct {
	MaxKeys  int64 `yaml:"max_keys"`
	MaxBytes int64 `yaml:"max_bytes" unit:"bytes"`
}

// TenantRateLimit is a token bucket: QPS tokens per second, Burst at most
// (default: QPS rounded up).
type TenantRateLimit struct {
	QPS   float64 `yaml:"qps"`
	Burst int     `yaml:"burst"`
}

var (
	validHooks   = map[string]bool{"authorize": true, "admit": true}
	validOnError = map[string]bool{"": true, "deny": true, "reject": true, "no_opinion": true, "ignore": true}
	validModes   = map[string]bool{"": true, "enforce": true, "audit": true}
	validChain   = map[string]bool{"policies": true, "rbac": true}
)

// HasHook reports whether the policy runs on hook.
func (p *Policy) HasHook(hook string) bool {
	for _, h := range p.Hooks {
		if h == hook {
			return true
		}
	}
	return false
}

func (c *Config) validatePolicies(p *problems) {
	seen := map[string]bool{}
	for _, x := range c.Authorization.Chain {
		if !validChain[x] {
			p.add("authorization.chain", "unknown authorizer %q (want policies or rbac)", x)
		} else if seen[x] {
			p.add("authorization.chain", "%q listed twice", x)
		}
		seen[x] = true
	}
	p.check(len(c.Authorization.Chain) > 0, "authorization.chain", "must list at least one authorizer")
	p.nonNegative("authorization.policy_watch_interval", c.Authorization.PolicyWatchInterval)

	names := map[string]bool{}
	for i := range c.Policies {
		pol := &c.Policies[i]
		key := fmt.Sprintf("policies[%d]", i)
		if pol.Name != "" {
			key = fmt.Sprintf("policies[%d] (%s)", i, pol.Name)
		}
		switch {
		case pol.Name == "":
			p.add(key+".name", "must not be empty")
		case names[pol.Name]:
			p.add(key+".name", "duplicate policy name %q", pol.Name)
		}
		names[pol.Name] = true
		if pol.Module == "" {
			p.add(key+".module", "must name a .wasm file")
		} else if st, err := os.Stat(pol.Module); err != nil {
			p.add(key+".module", "%v", err)
		} else if st.IsDir() {
			p.add(key+".module", "%s is a directory", pol.Module)
		}
		if b, err := hex.DecodeString(pol.SHA256); err != nil || len(b) != 32 {
			p.add(key+".sha256", "must be the module's SHA-256 as 64 hex digits (sha256sum %s), got %q", pol.Module, pol.SHA256)
		}
		if len(pol.Hooks) == 0 {
			p.add(key+".hooks", "must list authorize and/or admit")
		}
		for _, h := range pol.Hooks {
			p.check(validHooks[h], key+".hooks", "unknown hook %q (want authorize or admit)", h)
		}
		for _, pre := range pol.Match.Prefixes {
			p.check(pre != "", key+".match.prefixes", "must not contain an empty prefix (leave the list empty to match every key)")
		}
		p.check(validOnError[pol.OnError], key+".on_error", "unknown value %q (want deny, reject, no_opinion or ignore)", pol.OnError)
		p.check(validModes[pol.Mode], key+".mode", "unknown mode %q (want enforce or audit)", pol.Mode)
		if len(pol.Settings) > 0 && !json.Valid(pol.Settings) {
			p.add(key+".settings", "not representable as JSON")
		}
		l := &pol.Limits
		p.check(l.Memory == 0 || (l.Memory >= 64<<10 && l.Memory <= 4<<30), key+".limits.memory", "must be between 64KiB and 4GiB, got %d", l.Memory)
		p.check(l.ModuleSize >= 0, key+".limits.module_size", "must be >= 0, got %d", l.ModuleSize)
		p.nonNegative(key+".limits.authorize_timeout", l.AuthorizeTimeout)
		p.nonNegative(key+".limits.admit_timeout", l.AdmitTimeout)
		p.nonNegative(key+".limits.init_timeout", l.InitTimeout)
		p.nonNegative(key+".limits.pool_wait", l.PoolWait)
		p.check(l.Instances >= 0, key+".limits.instances", "must be >= 0, got %d", l.Instances)
		p.check(l.ReasonBytes >= 0, key+".limits.reason_bytes", "must be >= 0, got %d", l.ReasonBytes)
		p.check(l.Fuel >= 0, key+".limits.fuel", "must be >= 0, got %d", l.Fuel)
		p.check(l.CodeSize >= 0, key+".limits.code_size", "must be >= 0, got %d", l.CodeSize)
		for _, f := range []struct {
			name string
			v    int
		}{{"functions", l.Functions}, {"globals", l.Globals}, {"locals_per_function", l.LocalsPerFunction},
			{"tables", l.Tables}, {"table_elements", l.TableElements}, {"call_depth", l.CallDepth}} {
			p.check(f.v >= 0, key+".limits."+f.name, "must be >= 0, got %d", f.v)
		}
		p.check(l.TableElements <= 1<<28, key+".limits.table_elements", "must be at most 268435456, got %d", l.TableElements)
		p.check(l.StackSize >= 0 && l.StackSize <= 1<<30, key+".limits.stack_size", "must be between 0 and 1GiB, got %d", l.StackSize)
		p.check(l.TotalMemory >= 0, key+".limits.total_memory", "must be >= 0, got %d", l.TotalMemory)
		p.check(l.FunctionBytes >= 0 && l.FunctionBytes <= 1<<30, key+".limits.function_bytes", "must be between 0 and 1GiB, got %d", l.FunctionBytes)
		p.check(l.Locals >= 0, key+".limits.locals", "must be >= 0, got %d", l.Locals)
		p.check(l.BlocksPerFunction >= 0, key+".limits.blocks_per_function", "must be >= 0, got %d", l.BlocksPerFunction)
		p.check(l.CompileCost >= 0, key+".limits.compile_cost", "must be >= 0, got %d", l.CompileCost)
	}

	tnames := map[string]bool{}
	for i := range c.Tenants {
		t := &c.Tenants[i]
		key := fmt.Sprintf("tenants[%d]", i)
		if t.Name != "" {
			key = fmt.Sprintf("tenants[%d] (%s)", i, t.Name)
		}
		switch {
		case t.Name == "":
			p.add(key+".name", "must not be empty")
		case tnames[t.Name]:
			p.add(key+".name", "duplicate tenant name %q", t.Name)
		}
		tnames[t.Name] = true
		p.check(t.Prefix != "", key+".prefix", "must not be empty")
		for j := range c.Tenants[:i] {
			o := &c.Tenants[j]
			if t.Prefix != "" && o.Prefix != "" && (strings.HasPrefix(t.Prefix, o.Prefix) || strings.HasPrefix(o.Prefix, t.Prefix)) {
				p.add(key+".prefix", "%q overlaps tenant %q's prefix %q: every key must have at most one tenant", t.Prefix, o.Name, o.Prefix)
			}
		}
		p.check(t.Quota.MaxKeys >= 0, key+".quota.max_keys", "must be >= 0, got %d", t.Quota.MaxKeys)
		p.check(t.Quota.MaxBytes >= 0, key+".quota.max_bytes", "must be >= 0, got %d", t.Quota.MaxBytes)
		p.check(t.RateLimit.QPS >= 0, key+".rate_limit.qps", "must be >= 0, got %v", t.RateLimit.QPS)
		p.check(t.RateLimit.Burst >= 0, key+".rate_limit.burst", "must be >= 0, got %d", t.RateLimit.Burst)
	}
}

// TenantFor returns the tenant whose prefix holds key, or nil.
func (c *Config) TenantFor(key []byte) *Tenant {
	for i := range c.Tenants {
		if strings.HasPrefix(string(key), c.Tenants[i].Prefix) {
			return &c.Tenants[i]
		}
	}
	return nil
}
