package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodSHA = "9f2c2a6f4f1b1f0a6d5e8c3b7a9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f70819"

func TestPoliciesAndTenantsYAML(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "policies"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policies", "t.wasm"), []byte("\x00asm"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "metastore.yaml")
	yaml := `
authorization:
  chain: [rbac, policies]
  policy_watch_interval: 0s
tenants:
  - name: team-a
    prefix: /tenants/team-a/
    quota: { max_keys: 100000, max_bytes: 256MiB }
    rate_limit: { qps: 500, burst: 1000 }
  - name: team-b
    prefix: /tenants/team-b/
policies:
  - name: tenant-isolation
    module: policies/t.wasm
    sha256: ` + goodSHA + `
    hooks: [authorize]
    match: { prefixes: [/tenants/], roles: [dev] }
    settings: { users_own_prefix: true, admin_roles: [root], nested: { n: 1.5 } }
    on_error: no_opinion
    mode: audit
    limits: { memory: 8MiB, authorize_timeout: 2ms, instances: 4, table_elements: 5000, stack_size: 1MiB, functions: 30000,
              function_bytes: 128KiB, locals: 5000, blocks_per_function: 900, compile_cost: 1000000, pool_wait: 50ms }
`
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := Load([]string{"--config-file", path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Authorization; strings.Join(got.Chain, ",") != "rbac,policies" || got.PolicyWatchInterval != 0 {
		t.Errorf("authorization %+v", got)
	}
	if len(cfg.Tenants) != 2 {
		t.Fatalf("tenants %+v", cfg.Tenants)
	}
	a := cfg.Tenants[0]
	if a.Name != "team-a" || a.Prefix != "/tenants/team-a/" || a.Quota.MaxKeys != 100000 || a.Quota.MaxBytes != 256<<20 ||
		a.RateLimit.QPS != 500 || a.RateLimit.Burst != 1000 {
		t.Errorf("tenant %+v", a)
	}
	if ten := cfg.TenantFor([]byte("/tenants/team-b/x")); ten == nil || ten.Name != "team-b" {
		t.Errorf("TenantFor: %+v", ten)
	}
	if cfg.TenantFor([]byte("/tenants/team-c/x")) != nil {
		t.Error("TenantFor found a tenant for an unowned key")
	}
	if len(cfg.Policies) != 1 {
		t.Fatalf("policies %+v", cfg.Policies)
	}
	p := cfg.Policies[0]
	if p.Module != filepath.Join(dir, "policies", "t.wasm") {
		t.Errorf("module path %q not resolved against the config file", p.Module)
	}
	var settings map[string]any
	if err := json.Unmarshal(p.Settings, &settings); err != nil || settings["users_own_prefix"] != true ||
		settings["nested"].(map[string]any)["n"] != 1.5 {
		t.Errorf("settings %s: %v", p.Settings, err)
	}
	if !p.HasHook("authorize") || p.HasHook("admit") || p.OnError != "no_opinion" || p.Mode != "audit" ||
		p.Match.Prefixes[0] != "/tenants/" || p.Match.Roles[0] != "dev" ||
		p.Limits.Memory != 8<<20 || p.Limits.AuthorizeTimeout != 2*time.Millisecond || p.Limits.Instances != 4 ||
		p.Limits.TableElements != 5000 || p.Limits.StackSize != 1<<20 || p.Limits.Functions != 30000 ||
		p.Limits.FunctionBytes != 128<<10 || p.Limits.Locals != 5000 || p.Limits.BlocksPerFunction != 900 ||
		p.Limits.CompileCost != 1_000_000 || p.Limits.PoolWait != 50*time.Millisecond {
		t.Errorf("policy %+v", p)
	}
}

func TestPolicyConfigErrors(t *testing.T) {
	dir := t.TempDir()
	wasm := filepath.Join(dir, "p.wasm")
	if err := os.WriteFile(wasm, []byte("\x00asm"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "bad.yaml")
	yaml := `
authorization:
  chain: [policies, opa, policies]
tenants:
  - name: a
    prefix: /t/
    quota: { max_keys: -1, max_bytz: 1 }
  - name: a
    prefix: /t/a/
    rate_limit: { qps: lots }
policies:
  - name: p
    module: missing.wasm
    sha256: abc
    hooks: [authorise]
    on_error: explode
    mode: loud
    limits: { memory: 1KiB, authorize_timeout: -1ms, stack_size: 2GiB, functions: -1 }
  - name: p
    module: p.wasm
    sha256: ` + goodSHA + `
    match: { prefixes: [""] }
  - module: p.wasm
    sha256: ` + goodSHA + `
    hooks: [admit]
    unknown: 1
`
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := Load([]string{"--config-file", path}, nil)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		path + ":7: tenants[0].quota.max_bytz: unknown key (known: max_bytes, max_keys)",
		path + `:10: tenants[1].rate_limit.qps: invalid number "lots"`,
		path + ":26: policies[2].unknown: unknown key",
		`authorization.chain: unknown authorizer "opa"`,
		`authorization.chain: "policies" listed twice`,
		"tenants[0] (a).quota.max_keys: must be >= 0, got -1",
		`tenants[1] (a).name: duplicate tenant name "a"`,
		`tenants[1] (a).prefix: "/t/a/" overlaps tenant "a"'s prefix "/t/"`,
		"policies[0] (p).module: stat " + filepath.Join(dir, "missing.wasm") + ": no such file or directory",
		`policies[0] (p).sha256: must be the module's SHA-256 as 64 hex digits`,
		`policies[0] (p).hooks: unknown hook "authorise"`,
		`policies[0] (p).on_error: unknown value "explode"`,
		`policies[0] (p).mode: unknown mode "loud"`,
		"policies[0] (p).limits.memory: must be between 64KiB and 4GiB, got 1024",
		"policies[0] (p).limits.authorize_timeout: must be >= 0, got -1ms",
		"policies[0] (p).limits.stack_size: must be between 0 and 1GiB, got 2147483648",
		"policies[0] (p).limits.functions: must be >= 0, got -1",
		`policies[1] (p).name: duplicate policy name "p"`,
		"policies[1] (p).hooks: must list authorize and/or admit",
		"policies[1] (p).match.prefixes: must not contain an empty prefix",
		"policies[2].name: must not be empty",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("full error:\n%s", msg)
	}
}

// TestPolicyAndTenantConfig: policies and tenants from files named by
// policy_config and tenant_config (YAML, METASTORE_ variable or flag, the
// usual precedence), a directory read as a Kubernetes ConfigMap volume is
// laid out, and the errors a wrong file gets.
func TestPolicyAndTenantConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, body string) string {
		t.Helper()
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write("pol/mods/a.wasm", "\x00asm")
	write("pol/mods/b.wasm", "\x00asm")
	entry := func(name, mod string) string {
		return "  - {name: " + name + ", module: " + mod + ", sha256: " + goodSHA + ", hooks: [authorize]}\n"
	}
	// A ConfigMap volume: the keys are links into a hidden timestamped dir.
	write("pol/..2026_01_01/b.yaml", "policies:\n"+entry("b", "mods/b.wasm"))
	write("pol/..2026_01_01/a.yaml", "policies:\n"+entry("a", "mods/a.wasm"))
	for _, name := range []string{"a.yaml", "b.yaml"} {
		if err := os.Symlink(filepath.Join("..2026_01_01", name), filepath.Join(dir, "pol", name)); err != nil {
			t.Fatal(err)
		}
	}
	write("pol/README.md", "not a list")
	single := write("one/policies.yaml", "policies:\n"+entry("single", "../pol/mods/a.wasm"))
	tenants := write("tenants.yml", "tenants:\n  - {name: t1, prefix: /t1/, quota: {max_keys: 5}}\n")
	main := write("metastore.yaml", "policies:\n"+entry("inline", "pol/mods/a.wasm")+"tenant_config: "+tenants+"\n")

	names := func(c *Config) string {
		var out []string
		for _, p := range c.Policies {
			out = append(out, p.Name+"="+filepath.Base(p.Module))
		}
		return strings.Join(out, ",")
	}
	cfg, notes, err := Load([]string{"--config-file", main}, []string{"METASTORE_POLICY_CONFIG=" + filepath.Join(dir, "pol")})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(cfg); got != "a=a.wasm,b=b.wasm" {
		t.Errorf("policies from the directory: %s", got)
	}
	if cfg.Policies[0].Module != filepath.Join(dir, "pol", "mods", "a.wasm") {
		t.Errorf("module path %s, want it relative to the listing file", cfg.Policies[0].Module)
	}
	if len(cfg.Tenants) != 1 || cfg.Tenants[0].Name != "t1" || cfg.Tenants[0].Quota.MaxKeys != 5 {
		t.Errorf("tenants %+v", cfg.Tenants)
	}
	if cfg.ConfigFile != main {
		t.Errorf("ConfigFile %q", cfg.ConfigFile)
	}
	found := false
	for _, n := range notes {
		found = found || strings.Contains(n.Msg, "replaces the 1 policies listed in the config file")
	}
	if !found {
		t.Errorf("no note that the inline list was replaced: %+v", notes)
	}
	src := strings.Join(cfg.Sources(), " ")
	for _, want := range []string{main, filepath.Join(dir, "pol"), filepath.Join(dir, "pol", "b.yaml"), tenants, "b.wasm"} {
		if !strings.Contains(src, want) {
			t.Errorf("Sources() %s lacks %s", src, want)
		}
	}

	// The flag wins over the variable.
	cfg, _, err = Load([]string{"--config-file", main, "--policy-config", single}, []string{"METASTORE_POLICY_CONFIG=" + filepath.Join(dir, "pol")})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(cfg); got != "single=a.wasm" {
		t.Errorf("--policy-config: %s", got)
	}

	// Errors name the file and the problem.
	bad := write("bad/p.yaml", "policies:\n"+entry("x", "nope.wasm")+"limits: {max_txn_ops: 1}\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--policy-config", bad}, bad + ":3: limits: only \"policies\" belongs in a policy_config file"},
		{[]string{"--policy-config", filepath.Join(dir, "missing")}, "policy_config: stat " + filepath.Join(dir, "missing")},
		{[]string{"--tenant-config", write("bad/t.yaml", "tenants: 3\n")}, "expected a list"},
		{[]string{"--policy-config", write("bad2/p.yaml", "policies:\n"+entry("y", "nope.wasm"))}, "policies[0] (y).module"},
	} {
		_, _, err := Load(tc.args, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
