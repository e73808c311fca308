package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/server"
	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/v3rpc"
	"github.com/metastore-dev/metastore/tests/framework"
	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

// module writes a policy module into dir and returns its config entry.
func module(t *testing.T, dir, name string, bin []byte, hooks []string, settings any) config.Policy {
	t.Helper()
	path := filepath.Join(dir, name+".wasm")
	if err := os.WriteFile(path, bin, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	p := config.Policy{Name: name, Module: path, SHA256: hex.EncodeToString(sum[:]), Hooks: hooks}
	if settings != nil {
		b, err := json.Marshal(settings)
		if err != nil {
			t.Fatal(err)
		}
		p.Settings = b
	}
	return p
}

// warmCache copies the compilation cache shared by the tests into the data
// dir, and the new entries back afterwards: compiling a Go policy takes
// ~30 s under -race, loading it from the cache milliseconds.
func warmCache(t *testing.T, dataDir string) {
	dst := filepath.Join(dataDir, "wasm-cache")
	copyTree(wasmtest.CacheDir(), dst)
	t.Cleanup(func() { copyTree(dst, wasmtest.CacheDir()) })
}

func copyTree(from, to string) {
	filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(from, path)
		target := filepath.Join(to, rel)
		if d.IsDir() {
			os.MkdirAll(target, 0o700)
			return nil
		}
		if _, err := os.Stat(target); err == nil {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil {
			os.WriteFile(target, b, 0o600)
		}
		return nil
	})
}

func start(t *testing.T, policies []config.Policy, configure func(*config.Config)) *framework.Metastore {
	t.Helper()
	return framework.StartMetastoreConfig(t, func(c *config.Config) {
		c.Auth.BcryptCost = 4
		c.Policies = policies
		warmCache(t, c.DataDir)
		if configure != nil {
			configure(c)
		}
	})
}

// enableAuth creates root and the given users (each with a role granting
// readwrite on prefix), enables auth, and returns a client per user.
func enableAuth(t *testing.T, m *framework.Metastore, prefix string, users ...string) map[string]*clientv3.Client {
	t.Helper()
	ctx := context.Background()
	c := m.Client(t)
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.UserAdd(ctx, "root", "rootpw"))
	must(c.UserGrantRole(ctx, "root", "root"))
	must(c.RoleAdd(ctx, "rw"))
	key, end := prefix, clientv3.GetPrefixRangeEnd(prefix)
	if prefix == "" { // every key
		key, end = "\x00", "\x00"
	}
	must(c.RoleGrantPermission(ctx, "rw", key, end, clientv3.PermissionType(clientv3.PermReadWrite)))
	for _, u := range users {
		must(c.UserAdd(ctx, u, u+"pw"))
		must(c.UserGrantRole(ctx, u, "rw"))
	}
	must(c.AuthEnable(ctx))
	clients := map[string]*clientv3.Client{}
	for _, u := range append([]string{"root"}, users...) {
		pw := u + "pw"
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.Endpoint}, Username: u, Password: pw, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		clients[u] = cli
	}
	return clients
}

func wantCode(t *testing.T, err error, code codes.Code, contains string) {
	t.Helper()
	st, ok := status.FromError(err)
	if err == nil || !ok {
		// clientv3 wraps known errors; fall back to its conversion.
		ev, isEtcd := err.(rpctypes.EtcdError)
		if !isEtcd || ev.Code() != code || !strings.Contains(ev.Error(), contains) {
			t.Fatalf("got %v, want code %v containing %q", err, code, contains)
		}
		return
	}
	if st.Code() != code || !strings.Contains(st.Message(), contains) {
		t.Fatalf("got %v (%v), want code %v containing %q", st.Message(), st.Code(), code, contains)
	}
}

// TestAuthorizationBeforeRBAC: RBAC lets alice and bob read and write all of
// /tenants/; the tenant-isolation policy, first in the chain, confines each
// to /tenants/<user>/ and gives no opinion inside it, so RBAC still decides
// there. The client sees the policy's reason.
func TestAuthorizationBeforeRBAC(t *testing.T) {
	dir := t.TempDir()
	ti := module(t, dir, "tenant-isolation", wasmtest.GoPolicy(t, "policies/tenantisolation"), []string{"authorize"},
		map[string]any{"root": "/tenants/", "users_own_prefix": false, "admin_roles": []string{"root"}})
	ti.Match.Prefixes = []string{"/tenants/"}
	ti.Limits.AuthorizeTimeout = 2 * time.Second // a loaded CI machine must not time it out
	m := start(t, []config.Policy{ti}, nil)
	cl := enableAuth(t, m, "/tenants/", "alice", "bob")
	ctx := context.Background()
	alice := cl["alice"]

	if _, err := alice.Put(ctx, "/tenants/alice/a", "1"); err != nil {
		t.Fatalf("alice in her prefix: %v", err)
	}
	_, err := alice.Put(ctx, "/tenants/bob/a", "1")
	wantCode(t, err, codes.PermissionDenied, `etcdserver: permission denied: policy "tenant-isolation": tenant isolation: user "alice" may only access keys under "/tenants/alice/"`)
	_, err = alice.Get(ctx, "/tenants/", clientv3.WithPrefix())
	wantCode(t, err, codes.PermissionDenied, "may only access keys under")
	// RangeStream (etcd 3.7) goes through the same chain as Range.
	if n, err := rangeStream(ctx, alice, "/tenants/alice/"); err != nil || n != 1 {
		t.Fatalf("alice streams her prefix: %d kvs, %v", n, err)
	}
	_, err = rangeStream(ctx, alice, "/tenants/")
	wantCode(t, err, codes.PermissionDenied, "may only access keys under")
	// One decision for the whole txn: a compare on her own key does not
	// save a delete of bob's.
	_, err = alice.Txn(ctx).If(clientv3.Compare(clientv3.Version("/tenants/alice/a"), ">", 0)).
		Then(clientv3.OpPut("/tenants/alice/b", "x")).Else(clientv3.OpDelete("/tenants/bob/", clientv3.WithPrefix())).Commit()
	wantCode(t, err, codes.PermissionDenied, "may only access keys under")
	// Outside /tenants/ the policy does not match and RBAC decides: etcd's
	// exact error.
	if _, err := alice.Put(ctx, "/other", "1"); err != rpctypes.ErrPermissionDenied {
		t.Fatalf("outside the policy's prefixes: %v, want RBAC's %v", err, rpctypes.ErrPermissionDenied)
	}
	// root has an admin role: the policy gives no opinion, RBAC allows.
	if _, err := cl["root"].Get(ctx, "/tenants/", clientv3.WithPrefix()); err != nil {
		t.Fatalf("root: %v", err)
	}
	// Metrics per policy and verdict.
	body := scrape(t, m)
	for _, want := range []string{
		`metastore_policy_calls_total{hook="authorize",policy="tenant-isolation",verdict="deny"} 4`,
		`metastore_policy_pool_instances{policy="tenant-isolation"}`,
		`metastore_policy_call_duration_seconds_count{hook="authorize",policy="tenant-isolation"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// rangeStream reads a prefix with KV.RangeStream, which clientv3 3.6 lacks:
// a raw stream on the client's connection, decoded into metastore's
// RangeStreamResponse by gRPC's default codec. It returns the kvs read.
func rangeStream(ctx context.Context, c *clientv3.Client, prefix string) (int, error) {
	desc := &grpc.StreamDesc{StreamName: "RangeStream", ServerStreams: true}
	cs, err := c.ActiveConnection().NewStream(ctx, desc, "/etcdserverpb.KV/RangeStream")
	if err != nil {
		return 0, err
	}
	req := &pb.RangeRequest{Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix))}
	if err := cs.SendMsg(req); err != nil {
		return 0, err
	}
	if err := cs.CloseSend(); err != nil {
		return 0, err
	}
	n := 0
	for {
		var m v3rpc.RangeStreamResponse
		if err := cs.RecvMsg(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		n += len(m.RangeResponse.Kvs)
	}
}

func scrape(t *testing.T, m *framework.Metastore) string {
	t.Helper()
	resp, err := http.Get("http://" + strings.TrimPrefix(m.Endpoint, "http://") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestAdmission: a denying policy on /config/, the mutating stamp policy
// on /apps/ (puts and txns, both branches), and a mutation that tries to
// move a write outside what the caller may touch.
func TestAdmission(t *testing.T) {
	dir := t.TempDir()
	mods := wasmtest.Modules()
	deny := module(t, dir, "deny-config", mods["deny"], []string{"admit"}, nil)
	deny.Match.Prefixes = []string{"/config/"}
	stamp := module(t, dir, "stamp-owner", wasmtest.GoPolicy(t, "policies/stampowner"), []string{"admit"}, map[string]any{"prefix": "/apps/"})
	stamp.Match.Prefixes = []string{"/apps/"}
	stamp.Limits.AdmitTimeout = 2 * time.Second
	// mutate rewrites any put into a put of key "k": matched on /move/ it
	// leaves its lane and fails; matched on every key (for bob and carol
	// only) it stays in its lane and is authorized again as the caller.
	move := module(t, dir, "move-key", mods["mutate"], []string{"admit"}, nil)
	move.Match.Prefixes = []string{"/move/"}
	anywhere := module(t, dir, "move-anywhere", mods["mutate"], []string{"admit"}, nil)
	anywhere.Match.Users = []string{"bob", "carol"}
	m := start(t, []config.Policy{deny, stamp, move, anywhere}, nil)
	cl := enableAuth(t, m, "", "alice", "carol")
	ctx := context.Background()
	alice := cl["alice"]

	_, err := alice.Put(ctx, "/config/x", "1")
	wantCode(t, err, codes.FailedPrecondition, `etcdserver: request rejected by policy "deny-config": `+wasmtest.ReasonText)
	_, err = alice.Delete(ctx, "/config/", clientv3.WithPrefix())
	wantCode(t, err, codes.FailedPrecondition, "deny-config")

	if _, err := alice.Put(ctx, "/apps/web", `{"replicas": 3, "owner": "mallory"}`); err != nil {
		t.Fatal(err)
	}
	get := func(key string) string {
		resp, err := alice.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get %s: %v %v", key, resp, err)
		}
		return string(resp.Kvs[0].Value)
	}
	if v := get("/apps/web"); v != `{"owner":"alice","replicas":3}` {
		t.Fatalf("stamped value %s", v)
	}
	// A txn's puts are stamped in both branches; the failure branch runs.
	if _, err := alice.Txn(ctx).If(clientv3.Compare(clientv3.Value("/apps/web"), "=", "nope")).
		Then(clientv3.OpPut("/apps/a", `{"a":1}`)).Else(clientv3.OpPut("/apps/b", `{"b":2}`)).Commit(); err != nil {
		t.Fatal(err)
	}
	if v := get("/apps/b"); v != `{"b":2,"owner":"alice"}` {
		t.Fatalf("txn value %s", v)
	}
	// Not JSON: left alone.
	if _, err := alice.Put(ctx, "/apps/raw", "plain"); err != nil || get("/apps/raw") != "plain" {
		t.Fatalf("raw: %v", err)
	}

	// move-anywhere moves a write to "k": carol's role (every key) covers
	// it; bob, confined to /bob/, is refused on the re-check. move-key,
	// matched on /move/, may not move alice's write out of /move/.
	root := cl["root"]
	if _, err := root.RoleAdd(ctx, "mover"); err != nil {
		t.Fatal(err)
	}
	if _, err := root.RoleGrantPermission(ctx, "mover", "/bob/", clientv3.GetPrefixRangeEnd("/bob/"), clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.UserAdd(ctx, "bob", "bobpw"); err != nil {
		t.Fatal(err)
	}
	if _, err := root.UserGrantRole(ctx, "bob", "mover"); err != nil {
		t.Fatal(err)
	}
	bob, err := clientv3.New(clientv3.Config{Endpoints: []string{m.Endpoint}, Username: "bob", Password: "bobpw"})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	_, err = alice.Put(ctx, "/move/x", "v")
	wantCode(t, err, codes.FailedPrecondition, `policy "move-key" failed (bad_mutation): mutation leaves its lane: put of key "k"`)
	if _, err := bob.Put(ctx, "/bob/x", "v"); err != rpctypes.ErrPermissionDenied {
		t.Fatalf("a mutation outside the caller's permissions: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
	if _, err := cl["carol"].Put(ctx, "/carol/x", "v"); err != nil {
		t.Fatal(err)
	}
	if v := get("k"); v != "mutated" {
		t.Fatalf("moved write: %q", v)
	}
	if resp, _ := alice.Get(ctx, "/carol/x"); len(resp.Kvs) != 0 {
		t.Fatal("the original key was written too")
	}
	if body := scrape(t, m); !strings.Contains(body, `metastore_policy_mutations_total{policy="stamp-owner"} 2`) {
		t.Errorf("mutation metric missing")
	}
}

// TestHostileContainedMore: the rest of the hostile fixtures through the
// server — a garbage verdict, an oversized reason, an oversized mutation
// and a Go guest's panic — each answered with its on_error verdict (the
// default, fail closed, or fail open) while the server keeps serving.
// Modules that must not load (wrong ABI marker, missing marker, a
// non-granted import, a sha256 mismatch) are refused at start-up
// (TestStartupErrors) and on reload with the old policies serving
// (TestReloadUnderLoad*).
func TestHostileContainedMore(t *testing.T) {
	dir := t.TempDir()
	mods := wasmtest.Modules()
	garbage := module(t, dir, "garbage", mods["garbage-verdict"], []string{"authorize", "admit"}, nil)
	garbage.Match.Prefixes = []string{"/garbage/"}
	reason := module(t, dir, "reason", mods["oversized-reason"], []string{"authorize"}, nil)
	reason.Match.Prefixes = []string{"/reason/"}
	mutation := module(t, dir, "mutation", mods["oversized-mutation"], []string{"admit"}, nil)
	mutation.Match.Prefixes = []string{"/mutation/"}
	open := module(t, dir, "mutation-open", mods["oversized-mutation"], []string{"admit"}, nil)
	open.Match.Prefixes = []string{"/mutation-open/"}
	open.OnError = "ignore"
	gopanic := module(t, dir, "gopanic", wasmtest.GoPolicy(t, "testdata/hostile/gohostile"), []string{"authorize", "admit"},
		map[string]any{"mode": "panic"})
	gopanic.Match.Prefixes = []string{"/gopanic/"}
	gopanic.Limits.AuthorizeTimeout, gopanic.Limits.AdmitTimeout = 10*time.Second, 10*time.Second // -race on a busy machine
	goopen := gopanic
	goopen.Name, goopen.OnError = "gopanic-open", "no_opinion"
	goopen.Match.Prefixes = []string{"/gopanic-open/"}
	m := start(t, []config.Policy{garbage, reason, mutation, open, gopanic, goopen}, func(c *config.Config) {
		// The oversized mutation (100,000 bytes) is over this limit.
		c.Limits.MaxRequestBytes = 64 << 10
	})
	c := m.Client(t)
	ctx := context.Background()
	serving := func(after string) {
		t.Helper()
		if _, err := c.Put(ctx, "/fine", after); err != nil {
			t.Fatalf("after %s the server does not serve: %v", after, err)
		}
	}

	_, err := c.Put(ctx, "/garbage/a", "1")
	wantCode(t, err, codes.PermissionDenied, `policy "garbage" failed (bad_result)`)
	_, err = c.Get(ctx, "/garbage/a")
	wantCode(t, err, codes.PermissionDenied, `policy "garbage" failed (bad_result)`)
	serving("garbage")
	// An oversized reason keeps the DENY (with a host-written reason).
	_, err = c.Get(ctx, "/reason/a")
	wantCode(t, err, codes.PermissionDenied, `denied by policy "reason" (its reason was unusable`)
	serving("reason")
	_, err = c.Put(ctx, "/mutation/a", "1")
	wantCode(t, err, codes.FailedPrecondition, `policy "mutation" failed (bad_result)`)
	if _, err := c.Put(ctx, "/mutation-open/a", "1"); err != nil {
		t.Fatalf("oversized mutation with on_error ignore: %v", err)
	}
	serving("mutation")
	_, err = c.Put(ctx, "/gopanic/a", "1")
	wantCode(t, err, codes.PermissionDenied, `policy "gopanic" failed (trap)`)
	if _, err := c.Put(ctx, "/gopanic-open/a", "1"); err != nil {
		t.Fatalf("Go panic with on_error no_opinion: %v", err)
	}
	serving("gopanic")
	body := scrape(t, m)
	for _, want := range []string{
		`metastore_policy_errors_total{hook="authorize",kind="bad_result",policy="garbage"} 2`,
		`metastore_policy_errors_total{hook="authorize",kind="bad_reason",policy="reason"} 1`,
		`metastore_policy_errors_total{hook="admit",kind="bad_result",policy="mutation"} 1`,
		`metastore_policy_errors_total{hook="admit",kind="bad_result",policy="mutation-open"} 1`,
		`metastore_policy_errors_total{hook="authorize",kind="trap",policy="gopanic"} 1`,
		`metastore_policy_errors_total{hook="authorize",kind="trap",policy="gopanic-open"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestHostileContained: a guest that loops forever and one that traps, each
// with its on_error verdict, while the server keeps serving.
func TestHostileContained(t *testing.T) {
	dir := t.TempDir()
	mods := wasmtest.Modules()
	loop := module(t, dir, "loop", mods["loop"], []string{"authorize"}, nil)
	loop.Match.Prefixes = []string{"/loop/"}
	loop.Limits.AuthorizeTimeout = 10 * time.Millisecond
	trap := module(t, dir, "trap", mods["trap"], []string{"authorize", "admit"}, nil)
	trap.Match.Prefixes = []string{"/trap/"}
	trap.OnError = "no_opinion" // fail open: authorization falls through to RBAC
	bomb := module(t, dir, "bomb", mods["memory-bomb"], []string{"admit"}, nil)
	bomb.Match.Prefixes = []string{"/bomb/"}
	bomb.OnError = "ignore"
	bomb.Limits.Memory = 1 << 20
	m := start(t, []config.Policy{loop, trap, bomb}, nil)
	c := m.Client(t)
	ctx := context.Background()

	start := time.Now()
	_, err := c.Put(ctx, "/loop/a", "1")
	wantCode(t, err, codes.PermissionDenied, `policy "loop" failed (timeout)`)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the loop held the request for %v", took)
	}
	// trap: authorization fails open (no_opinion → RBAC, auth off → allowed),
	// admission fails open too (on_error applies to both hooks).
	if _, err := c.Put(ctx, "/trap/a", "1"); err != nil {
		t.Fatalf("trap with on_error no_opinion: %v", err)
	}
	if _, err := c.Put(ctx, "/bomb/a", "1"); err != nil {
		t.Fatalf("memory bomb with on_error ignore: %v", err)
	}
	if _, err := c.Put(ctx, "/fine", "1"); err != nil {
		t.Fatal(err)
	}
	body := scrape(t, m)
	for _, want := range []string{
		`metastore_policy_errors_total{hook="authorize",kind="timeout",policy="loop"} 1`,
		`metastore_policy_errors_total{hook="authorize",kind="trap",policy="trap"} 1`,
		`metastore_policy_errors_total{hook="admit",kind="oom",policy="bomb"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestReload swaps a policy's module on a reload; a bad module is refused
// and the old one keeps serving.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	mods := wasmtest.Modules()
	pol := module(t, dir, "gate", mods["deny"], []string{"admit"}, nil)
	m := start(t, []config.Policy{pol}, func(c *config.Config) { c.Authorization.PolicyWatchInterval = 0 })
	c := m.Client(t)
	ctx := context.Background()
	if _, err := c.Put(ctx, "a", "1"); err == nil {
		t.Fatal("deny policy let a put through")
	}
	next := *m.Config
	allow := module(t, dir, "gate", mods["allow"], []string{"admit"}, nil) // same file, new contents
	next.Policies = []config.Policy{allow}
	if err := m.Srv.ReloadConfig(ctx, &next); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "a", "1"); err != nil {
		t.Fatalf("after reload: %v", err)
	}
	// A module whose digest does not match: refused, the old one serves.
	bad := allow
	bad.SHA256 = strings.Repeat("0", 64)
	next.Policies = []config.Policy{bad}
	if err := m.Srv.ReloadConfig(ctx, &next); err == nil || !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Fatalf("bad reload: %v", err)
	}
	if _, err := c.Put(ctx, "a", "2"); err != nil {
		t.Fatalf("the old module should keep serving: %v", err)
	}
	if body := scrape(t, m); !strings.Contains(body, `metastore_policy_reloads_total{policy="gate",result="failed"} 1`) ||
		!strings.Contains(body, `metastore_policy_reloads_total{policy="gate",result="ok"} 1`) {
		t.Error("reload metrics missing")
	}
}

// TestStartupErrors: a module that cannot serve stops start-up with an error
// naming the file and the problem.
func TestStartupErrors(t *testing.T) {
	dir := t.TempDir()
	mods := wasmtest.Modules()
	for _, tc := range []struct {
		pol  config.Policy
		want string
	}{
		{module(t, dir, "abi", mods["wrong-abi"], []string{"authorize"}, nil), `missing export "metastore_policy_v1"`},
		{module(t, dir, "imp", mods["ungranted-import"], []string{"authorize"}, nil), "import env.now is not granted"},
		{func() config.Policy {
			p := module(t, dir, "sha", mods["allow"], []string{"authorize"}, nil)
			p.SHA256 = strings.Repeat("ab", 32)
			return p
		}(), "sha256 mismatch"},
		{module(t, dir, "hook", mods["noopinion"], []string{"admit"}, nil), "configured for admit but the module does not export policy_admit"},
	} {
		cfg := config.Default()
		cfg.DataDir = t.TempDir()
		cfg.Server.ListenClientURLs = []string{"http://127.0.0.1:0"}
		cfg.Policies = []config.Policy{tc.pol}
		_, err := server.New(cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.pol.Module) {
			t.Errorf("%s: %v, want an error naming %s and containing %q", tc.pol.Name, err, tc.pol.Module, tc.want)
		}
	}
}

// TestWatchModuleFile: the server notices a changed module file; the new
// bytes do not match the configured digest, so the reload is refused, the
// failure counted, and the old module keeps serving.
func TestWatchModuleFile(t *testing.T) {
	dir := t.TempDir()
	mods := wasmtest.Modules()
	pol := module(t, dir, "gate", mods["deny"], []string{"admit"}, nil)
	m := start(t, []config.Policy{pol}, func(c *config.Config) { c.Authorization.PolicyWatchInterval = 20 * time.Millisecond })
	c := m.Client(t)
	ctx := context.Background()
	if err := os.WriteFile(pol.Module, mods["allow"], 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(scrape(t, m), `metastore_policy_reloads_total{policy="gate",result="failed"} 1`) {
		if time.Now().After(deadline) {
			t.Fatalf("the changed module was not noticed:\n%s", m.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := c.Put(ctx, "a", "1"); err == nil {
		t.Fatal("the refused module replaced the old one")
	}
	if !strings.Contains(m.Log(), "sha256 mismatch") {
		t.Error("the refusal is not logged with its cause")
	}
}
