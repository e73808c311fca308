package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/tests/framework"
	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

// reloadEnv is a metastore configured from files, as an operator runs it:
// a config file, a directory of policy files (--policy-config) and a
// tenants file (METASTORE_TENANT_CONFIG).
type reloadEnv struct {
	t       *testing.T
	dir     string
	polDir  string
	tenants string
	cfgFile string
	watch   time.Duration
	m       *framework.Metastore
	c       *clientv3.Client
	// trigger makes the server notice the files just written: a reload as
	// SIGHUP does it, or nothing when the server watches the files.
	trigger func()
}

func newReloadEnv(t *testing.T, watch time.Duration) *reloadEnv {
	dir := t.TempDir()
	e := &reloadEnv{t: t, dir: dir, polDir: filepath.Join(dir, "policies.d"), tenants: filepath.Join(dir, "tenants.yaml"),
		cfgFile: filepath.Join(dir, "metastore.yaml"), watch: watch}
	mods := wasmtest.Modules()
	for _, name := range []string{"allow", "deny", "noopinion", "wrong-abi", "ungranted-import", "missing-marker"} {
		if err := os.WriteFile(filepath.Join(dir, name+".wasm"), mods[name], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(e.polDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.writeTenants("")
	// No warmCache: these fixtures compile in milliseconds, and 57 MB of
	// copied cache makes the first fsyncs wait for its writeback.
	dataDir := filepath.Join(dir, "data")
	e.writeChain("policies, rbac")
	e.m = framework.StartMetastoreArgs(t, []string{"--config-file", e.cfgFile, "--data-dir", dataDir,
		"--listen-client-urls", "http://127.0.0.1:0", "--policy-config", e.polDir},
		[]string{"METASTORE_TENANT_CONFIG=" + e.tenants})
	e.c = e.m.Client(t)
	if watch == 0 {
		e.trigger = func() { e.m.Srv.Reload(context.Background()) }
	} else {
		e.trigger = func() {}
	}
	return e
}

// writeChain writes the config file with the given authorization chain.
func (e *reloadEnv) writeChain(chain string) {
	e.write(e.cfgFile, fmt.Sprintf("authorization:\n  policy_watch_interval: %s\n  chain: [%s]\n", e.watch, chain))
}

func (e *reloadEnv) write(path, body string) {
	e.t.Helper()
	// Through a rename, as editors and ConfigMap updates do: the watcher
	// never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		e.t.Fatal(err)
	}
}

// policy is one policies file's entry.
func (e *reloadEnv) policy(name, module, extra string) string {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, module+".wasm"))
	if err != nil {
		e.t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return fmt.Sprintf("  - {name: %s, module: ../%s.wasm, sha256: %s, limits: {instances: 2}, %s}\n", name, module, hex.EncodeToString(sum[:]), extra)
}

func (e *reloadEnv) writePolicies(file string, entries ...string) {
	e.write(filepath.Join(e.polDir, file), "policies:\n"+strings.Join(entries, ""))
	e.trigger()
}

func (e *reloadEnv) removePolicies(file string) {
	if err := os.Remove(filepath.Join(e.polDir, file)); err != nil {
		e.t.Fatal(err)
	}
	e.trigger()
}

func (e *reloadEnv) writeTenants(entries string) {
	if entries == "" {
		e.write(e.tenants, "tenants: []\n")
		return
	}
	e.write(e.tenants, "tenants:\n"+entries)
}

// eventually polls cond until it holds.
func (e *reloadEnv) eventually(what string, cond func() error) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: %v\n%s", what, err, tail(e.m.Log()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func tail(s string) string {
	if len(s) > 6000 {
		return s[len(s)-6000:]
	}
	return s
}

// putCode is the gRPC code of a put (OK for success).
func (e *reloadEnv) putCode(key string) codes.Code {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.c.Put(ctx, key, "v")
	return codeOf(err)
}

func codeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	var ee interface{ Code() codes.Code }
	if errors.As(err, &ee) {
		return ee.Code()
	}
	return codes.Unknown
}

var uniq atomic.Int64

func wantPut(key string, code codes.Code, e *reloadEnv) func() error {
	return func() error {
		k := key
		if strings.HasSuffix(k, "*") { // a new key on every attempt
			k = strings.TrimSuffix(k, "*") + strconv.FormatInt(uniq.Add(1), 10)
		}
		if got := e.putCode(k); got != code {
			return fmt.Errorf("put %s: %v, want %v", k, got, code)
		}
		return nil
	}
}

// metric returns the value of the sample line starting with prefix, or -1.
func (e *reloadEnv) metric(prefix string) float64 {
	for _, line := range strings.Split(scrape(e.t, e.m), "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, prefix)), 64)
			return v
		}
	}
	return -1
}

// load runs puts, gets and txns on /load/ from several clients until
// stopped; every one must succeed whatever the reloads do.
type load struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	ops    atomic.Int64
	mu     sync.Mutex
	failed []error
}

func startLoad(t *testing.T, m *framework.Metastore, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for w := range workers {
		c := m.Client(t)
		l.wg.Go(func() {
			ctx := context.Background()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				key := fmt.Sprintf("/load/%d/%d", w, i%50)
				var err error
				switch i % 3 {
				case 0:
					_, err = c.Put(ctx, key, strconv.Itoa(i))
				case 1:
					_, err = c.Get(ctx, fmt.Sprintf("/load/%d/", w), clientv3.WithPrefix())
				case 2:
					_, err = c.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), ">", -1)).
						Then(clientv3.OpPut(key, "t")).Else(clientv3.OpDelete(key)).Commit()
				}
				l.ops.Add(1)
				if err != nil {
					l.mu.Lock()
					l.failed = append(l.failed, fmt.Errorf("%s: %w", key, err))
					l.mu.Unlock()
				}
			}
		})
	}
	return l
}

func (l *load) finish(t *testing.T) {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failed) > 0 {
		t.Errorf("%d of %d requests under load failed across reloads; first: %v", len(l.failed), l.ops.Load(), l.failed[0])
	}
	t.Logf("%d requests under load, none failed", l.ops.Load())
}

// TestReloadUnderLoadSIGHUP and TestReloadUnderLoadWatch add, change and
// remove policies and tenants in files while clients keep writing and
// reading through the policies; the server applies each change without a
// restart and without failing a request, and refuses bad changes with the
// old configuration serving.
func TestReloadUnderLoadSIGHUP(t *testing.T) { exerciseReloads(t, newReloadEnv(t, 0)) }

func TestReloadUnderLoadWatch(t *testing.T) {
	exerciseReloads(t, newReloadEnv(t, 20*time.Millisecond))
}

func exerciseReloads(t *testing.T, e *reloadEnv) {
	// A policy that sees every write and read: the load goes through it.
	every := e.policy("every", "allow", "hooks: [authorize, admit]")
	e.writePolicies("50-every.yaml", every)
	e.eventually("policy every loaded", func() error {
		if v := e.metric(`metastore_policy_pool_instances{policy="every"}`); v < 0 {
			return errors.New("no pool metric yet")
		}
		return nil
	})
	ld := startLoad(t, e.m, 4)
	reloadsOK := func() float64 { return e.metric(`metastore_config_reloads_total{result="ok"}`) }

	// Add an admission policy.
	e.writePolicies("05-gate.yaml", e.policy("gate", "deny", "hooks: [admit], match: {prefixes: [/denied/]}"))
	e.eventually("gate added", wantPut("/denied/a", codes.FailedPrecondition, e))
	if got := e.putCode("/open/a"); got != codes.OK {
		t.Fatalf("a key the gate does not match: %v", got)
	}
	// Change its match.
	e.writePolicies("05-gate.yaml", e.policy("gate", "deny", "hooks: [admit], match: {prefixes: [/blocked/]}"))
	e.eventually("gate's match changed", wantPut("/blocked/a", codes.FailedPrecondition, e))
	e.eventually("gate's old match dropped", wantPut("/denied/a", codes.OK, e))
	// Audit mode: logged, not enforced.
	e.writePolicies("05-gate.yaml", e.policy("gate", "deny", "hooks: [admit], match: {prefixes: [/blocked/]}, mode: audit"))
	e.eventually("gate in audit mode", wantPut("/blocked/a", codes.OK, e))
	// Hooks: now it also authorizes (and denies) reads and writes.
	e.writePolicies("05-gate.yaml", e.policy("gate", "deny", "hooks: [authorize, admit], match: {prefixes: [/blocked/]}"))
	e.eventually("gate authorizes", func() error {
		_, err := e.c.Get(context.Background(), "/blocked/a")
		if codeOf(err) != codes.PermissionDenied {
			return fmt.Errorf("get: %v", err)
		}
		return nil
	})
	// The chain's order, from the config file itself: RBAC first allows
	// everything while auth is off, so the gate is never asked.
	getCode := func(key string) codes.Code {
		_, err := e.c.Get(context.Background(), key)
		return codeOf(err)
	}
	e.writeChain("rbac, policies")
	e.trigger()
	e.eventually("RBAC first", func() error {
		if c := getCode("/blocked/a"); c != codes.OK {
			return fmt.Errorf("get: %v", c)
		}
		return nil
	})
	e.writeChain("policies, rbac")
	e.trigger()
	e.eventually("policies first again", func() error {
		if c := getCode("/blocked/a"); c != codes.PermissionDenied {
			return fmt.Errorf("get: %v", c)
		}
		return nil
	})
	// A new module and settings for the policy every request goes through:
	// loaded beside the old one, swapped in; the old one drains.
	before := e.metric(`metastore_policy_reloads_total{policy="every",result="ok"}`)
	e.writePolicies("50-every.yaml", e.policy("every", "noopinion", "hooks: [authorize], settings: {v: 2}"))
	e.eventually("every reloaded", func() error {
		if v := e.metric(`metastore_policy_reloads_total{policy="every",result="ok"}`); v <= before {
			return fmt.Errorf("reloads %v", v)
		}
		return nil
	})
	e.writePolicies("50-every.yaml", e.policy("every", "allow", "hooks: [authorize, admit], settings: {v: 3}"))

	// Bad changes are refused and counted; the old configuration serves.
	for _, bad := range []struct{ file, body, log string }{
		{"20-bad.yaml", "policies:\n" + e.policy("abi", "wrong-abi", "hooks: [authorize]"), `missing export \"metastore_policy_v1\"`},
		{"20-bad.yaml", "policies:\n" + e.policy("marker", "missing-marker", "hooks: [authorize]"), `missing export \"metastore_policy_v1\"`},
		{"20-bad.yaml", "policies:\n" + e.policy("imp", "ungranted-import", "hooks: [authorize]"), "import env.now is not granted"},
		{"20-bad.yaml", "policies:\n" + regexp.MustCompile(`sha256: [0-9a-f]+`).
			ReplaceAllString(e.policy("sha", "allow", "hooks: [authorize]"), "sha256: "+strings.Repeat("0", 64)), "sha256 mismatch"},
		{"20-bad.yaml", "policies:\n" + e.policy("hookless", "noopinion", "hooks: [admit]"), "does not export policy_admit"},
		{"20-bad.yaml", "policies:\n  - {name: typo, modul: x.wasm}\n", "modul: unknown key"},
		{"20-bad.yaml", "policies:\n" + e.policy("gate", "allow", "hooks: [admit]"), "duplicate policy name"},
	} {
		failed := e.metric(`metastore_config_reloads_total{result="failed"}`)
		e.write(filepath.Join(e.polDir, bad.file), bad.body)
		e.trigger()
		e.eventually("bad config refused: "+bad.log, func() error {
			if v := e.metric(`metastore_config_reloads_total{result="failed"}`); v <= max(failed, 0) {
				return fmt.Errorf("failed reloads %v", v)
			}
			if !strings.Contains(e.m.Log(), bad.log) {
				return fmt.Errorf("log lacks %q", bad.log)
			}
			return nil
		})
		if v := e.metric("metastore_config_last_reload_successful"); v != 0 {
			t.Errorf("last_reload_successful %v after a refused reload", v)
		}
		if got := e.putCode("/blocked/b"); got != codes.PermissionDenied {
			t.Fatalf("after a refused reload the old gate should still deny: %v", got)
		}
	}
	e.removePolicies("20-bad.yaml")
	e.eventually("bad file removed", func() error {
		if v := e.metric("metastore_config_last_reload_successful"); v != 1 {
			return fmt.Errorf("last_reload_successful %v", v)
		}
		return nil
	})

	// Remove a policy: its decisions and its gauges go.
	e.removePolicies("05-gate.yaml")
	e.eventually("gate removed", wantPut("/blocked/c", codes.OK, e))
	e.eventually("gate's gauges dropped", func() error {
		if v := e.metric(`metastore_policy_pool_instances{policy="gate"}`); v != -1 {
			return fmt.Errorf("pool gauge %v", v)
		}
		return nil
	})

	// Tenants: a quota lowered below use, usage kept across reloads.
	ctx := context.Background()
	e.writeTenants("  - {name: t1, prefix: /t1/, quota: {max_keys: 100}}\n")
	e.trigger()
	e.eventually("tenant t1 added", func() error {
		if !strings.Contains(e.m.Log(), "reloaded tenants") {
			return errors.New("not yet")
		}
		return nil
	})
	for i := range 3 {
		if _, err := e.c.Put(ctx, fmt.Sprintf("/t1/%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	e.writeTenants("  - {name: t1, prefix: /t1/, quota: {max_keys: 3}}\n")
	e.trigger()
	e.eventually("t1's quota lowered (3 keys counted across the reload)", wantPut("/t1/new*", codes.ResourceExhausted, e))
	if got := e.putCode("/t1/0"); got != codes.OK {
		t.Fatalf("an overwrite within the quota: %v", got)
	}
	// A tenant added over existing keys is counted.
	for i := range 2 {
		if _, err := e.c.Put(ctx, fmt.Sprintf("/t2/%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	e.writeTenants("  - {name: t1, prefix: /t1/, quota: {max_keys: 3}}\n  - {name: t2, prefix: /t2/, quota: {max_keys: 2}}\n")
	e.trigger()
	e.eventually("t2 added and counted", wantPut("/t2/new*", codes.ResourceExhausted, e))
	if e.putCode("/t2/0") != codes.OK {
		t.Fatal("an overwrite within t2's quota was refused")
	}
	// A rate limit added, then raised: the bucket is kept, with the new rate.
	get := func() codes.Code {
		_, err := e.c.Get(ctx, "/t2/0")
		return codeOf(err)
	}
	e.writeTenants("  - {name: t1, prefix: /t1/, quota: {max_keys: 3}}\n  - {name: t2, prefix: /t2/, quota: {max_keys: 2}, rate_limit: {qps: 0.001, burst: 1}}\n")
	e.trigger()
	e.eventually("t2 rate-limited", func() error {
		get() // the one token
		if c := get(); c != codes.ResourceExhausted {
			return fmt.Errorf("second get: %v", c)
		}
		return nil
	})
	e.writeTenants("  - {name: t1, prefix: /t1/, quota: {max_keys: 3}}\n  - {name: t2, prefix: /t2/, quota: {max_keys: 2}, rate_limit: {qps: 100000, burst: 10}}\n")
	e.trigger()
	e.eventually("t2's rate raised", func() error {
		for range 5 {
			if c := get(); c != codes.OK {
				return fmt.Errorf("get: %v", c)
			}
		}
		return nil
	})
	// Removed: no quota any more.
	e.writeTenants("  - {name: t2, prefix: /t2/, quota: {max_keys: 2}}\n")
	e.trigger()
	e.eventually("t1 removed", wantPut("/t1/new", codes.OK, e))

	// Remove the policy every request of the load goes through: requests in
	// flight finish with it, then it is closed.
	e.removePolicies("50-every.yaml")
	e.eventually("every removed", func() error {
		if v := e.metric(`metastore_policy_pool_instances{policy="every"}`); v != -1 {
			return fmt.Errorf("pool gauge %v", v)
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond) // more load on the generation without policies
	ld.finish(t)
	if strings.Contains(e.m.Log(), "take effect only after a restart") {
		t.Error("a reload warned of changed settings that did not change")
	}
	if v := reloadsOK(); v < 10 {
		t.Errorf("only %v successful reloads counted", v)
	}
}
