package wasmhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/wasmhost/wasmtest"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

var modules = wasmtest.Modules()

type recorder struct {
	mu         sync.Mutex
	errs       map[ErrorKind]int
	discarded  map[string]int
	degraded   []bool
	logs       []string
	reloads    []error
	calls      atomic.Int64
	created    atomic.Int64
	misses     atomic.Int64
	compiled   atomic.Int64
	lastErrMsg string
}

func (r *recorder) events() Events {
	r.errs = map[ErrorKind]int{}
	r.discarded = map[string]int{}
	return Events{
		Call: func(string, Hook, Verdict, time.Duration) { r.calls.Add(1) },
		Error: func(_ string, _ Hook, k ErrorKind, err error) {
			r.mu.Lock()
			r.errs[k]++
			r.lastErrMsg = err.Error()
			r.mu.Unlock()
		},
		Log: func(p string, level int32, msg string) {
			r.mu.Lock()
			r.logs = append(r.logs, msg)
			r.mu.Unlock()
		},
		PoolMiss:        func(string) { r.misses.Add(1) },
		InstanceCreated: func(string, time.Duration) { r.created.Add(1) },
		InstanceDiscarded: func(_ string, reason string) {
			r.mu.Lock()
			r.discarded[reason]++
			r.mu.Unlock()
		},
		Compiled: func(string, time.Duration) { r.compiled.Add(1) },
		Degraded: func(_ string, d bool) {
			r.mu.Lock()
			r.degraded = append(r.degraded, d)
			r.mu.Unlock()
		},
		Reloaded: func(_ string, err error) {
			r.mu.Lock()
			r.reloads = append(r.reloads, err)
			r.mu.Unlock()
		},
	}
}

func (r *recorder) errCount(k ErrorKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errs[k]
}

func newHost(t testing.TB, rec *recorder) *Host {
	t.Helper()
	var ev Events
	if rec != nil {
		ev = rec.events()
	}
	h, err := NewHost(Options{Events: ev, CacheDir: wasmtest.CacheDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	return h
}

func load(t testing.TB, h *Host, name string, mod func(*Config)) *Policy {
	t.Helper()
	cfg := Config{Name: name, Path: name + ".wasm", Binary: modules[name]}
	if cfg.Binary == nil {
		t.Fatalf("no fixture %q", name)
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := h.Load(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func testRequest(t testing.TB) []byte {
	t.Helper()
	b, err := AppendRequest(nil, &Request{Op: policyabi.OpPut, User: "alice", Roles: []string{"dev"},
		Ranges: []Range{{Perm: policyabi.PermWrite, Key: []byte("/tenants/alice/x")}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerdicts(t *testing.T) {
	h := newHost(t, nil)
	req := testRequest(t)
	ctx := context.Background()
	for _, tc := range []struct {
		module string
		hook   Hook
		want   Verdict
		reason string
		mut    string
	}{
		{"allow", HookAuthorize, Allow, "", ""},
		{"allow", HookAdmit, Allow, "", ""},
		{"deny", HookAuthorize, Deny, wasmtest.ReasonText, ""},
		{"deny", HookAdmit, Deny, wasmtest.ReasonText, ""},
		{"noopinion", HookAuthorize, NoOpinion, "", ""},
		{"mutate", HookAdmit, Mutated, "", wasmtest.MutationText},
	} {
		p := load(t, h, tc.module, nil)
		d := p.Call(ctx, tc.hook, req)
		if d.Err != nil || d.Verdict != tc.want || d.Reason != tc.reason || string(d.Mutation) != tc.mut {
			t.Errorf("%s %v: got %+v, want %v %q %q", tc.module, tc.hook, d, tc.want, tc.reason, tc.mut)
		}
	}
}

func TestMissingHook(t *testing.T) {
	h := newHost(t, nil)
	p := load(t, h, "noopinion", nil)
	if p.Has(HookAdmit) || !p.Has(HookAuthorize) {
		t.Fatal("hooks not detected")
	}
	if d := p.Admit(context.Background(), testRequest(t)); d.Verdict != Deny || d.Kind != KindBadResult {
		t.Fatalf("admit on an authorize-only policy: %+v", d)
	}
}

// TestHostileContained runs every hostile guest that loads and checks that
// the call ends in time with the on_error verdict, the error kind is right,
// the instance is discarded, and a well-behaved policy on the same host
// still answers.
func TestHostileContained(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	good := load(t, h, "allow", nil)
	req := testRequest(t)
	admitReq, err := AppendAdmission(nil, &Request{Op: policyabi.OpPut}, policyabi.AdmitPut, []byte("\x0a\x01k"))
	if err != nil {
		t.Fatal(err)
	}
	small := Limits{MemoryBytes: 1 << 20, AuthorizeTimeout: 20 * time.Millisecond, AdmitTimeout: 20 * time.Millisecond,
		MutationBytes: 1000, Instances: 1}
	for _, tc := range []struct {
		module string
		hook   Hook
		kind   ErrorKind
	}{
		{"loop", HookAuthorize, KindTimeout},
		{"loop", HookAdmit, KindTimeout},
		{"recursion", HookAuthorize, KindTimeout},
		{"memory-bomb", HookAuthorize, KindOOM},
		{"trap", HookAuthorize, KindTrap},
		{"trap", HookAdmit, KindTrap},
		{"garbage-verdict", HookAuthorize, KindBadResult},
		{"garbage-verdict", HookAdmit, KindBadResult},
		{"mutate-authorize", HookAuthorize, KindBadResult},
		{"oversized-mutation", HookAdmit, KindBadResult},
	} {
		for _, onErr := range []OnError{FailClosed, FailOpen} {
			name := tc.module + "/" + tc.hook.String()
			limits := small
			if tc.kind == KindOOM {
				// NB: growing page by page reallocates the memory each time;
				// under -race on a busy machine that alone can pass 20ms.
				limits.AuthorizeTimeout = 500 * time.Millisecond
			}
			p := load(t, h, tc.module, func(c *Config) { c.Limits = limits; c.OnError = onErr })
			r := req
			if tc.hook == HookAdmit {
				r = admitReq
			}
			before := rec.errCount(tc.kind)
			start := time.Now()
			d := p.Call(context.Background(), tc.hook, r)
			took := time.Since(start)
			if d.Err == nil || d.Kind != tc.kind {
				t.Errorf("%s: got %+v, want error kind %s", name, d, tc.kind)
			}
			if want := onErr.verdict(tc.hook); d.Verdict != want {
				t.Errorf("%s on_error %d: verdict %v, want %v", name, onErr, d.Verdict, want)
			}
			if rec.errCount(tc.kind) != before+1 {
				t.Errorf("%s: error event not reported", name)
			}
			if took > time.Second {
				t.Errorf("%s: took %v", name, took)
			}
			// The failed instance is replaced and the policy answers again
			// (with the same failure). NB: a call waits for an idle instance
			// only up to its own deadline, so on a loaded machine the calls
			// right after the discard may time out while the pool refills.
			var d2 Decision
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
				if d2 = p.Call(context.Background(), tc.hook, r); d2.Kind != KindTimeout || tc.kind == KindTimeout {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if d2.Kind != tc.kind {
				t.Errorf("%s: second call %+v", name, d2)
			}
			if d := good.Authorize(context.Background(), req); d.Verdict != Allow {
				t.Fatalf("after %s the good policy answered %+v", name, d)
			}
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.discarded["error"] == 0 {
		t.Error("no instance was discarded after an error")
	}
}

func TestLoopStopsNearDeadline(t *testing.T) {
	h := newHost(t, nil)
	p := load(t, h, "loop", func(c *Config) { c.Limits.AuthorizeTimeout = 5 * time.Millisecond })
	req := testRequest(t)
	var worst time.Duration
	for i := 0; i < 5; i++ {
		start := time.Now()
		d := p.Authorize(context.Background(), req)
		if d.Kind != KindTimeout {
			t.Fatalf("got %+v", d)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("a 5ms deadline stopped the loop within %v", worst)
	if worst > 200*time.Millisecond {
		t.Errorf("loop stopped after %v", worst)
	}
}

func TestLoadErrors(t *testing.T) {
	h := newHost(t, nil)
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	allow := modules["allow"]
	sum := sha256.Sum256(allow)
	good := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing-marker", Config{Path: write("m.wasm", modules["missing-marker"])}, `missing export "metastore_policy_v1"`},
		{"wrong-abi", Config{Path: write("w.wasm", modules["wrong-abi"])}, `missing export "metastore_policy_v1"`},
		{"no-hooks", Config{Path: write("n.wasm", modules["no-hooks"])}, "exports neither"},
		{"no-memory", Config{Path: write("nm.wasm", modules["no-memory"])}, `missing export "memory"`},
		{"ungranted-import", Config{Path: write("i.wasm", modules["ungranted-import"])}, "import env.now is not granted"},
		{"fuel-import", Config{Path: write("f.wasm", modules["fuel-import"])}, "is not granted"},
		{"wasi-unknown", Config{Path: write("s.wasm", modules["wasi-unknown"])}, "wasi_snapshot_preview1.sock_open is not granted"},
		{"sha-mismatch", Config{Path: write("a.wasm", allow), SHA256: strings.Repeat("0", 64)}, "sha256 mismatch: file has " + good},
		{"too-big", Config{Path: write("b.wasm", allow), Limits: Limits{ModuleBytes: 100}}, "over the 100-byte limit"},
		{"garbage", Config{Path: write("g.wasm", []byte("not wasm at all"))}, "bad magic"},
		{"missing-file", Config{Path: filepath.Join(dir, "nope.wasm")}, "no such file"},
		{"init-rejects", Config{Path: write("r.wasm", modules["init-rejects"])}, "policy_init rejected the settings: " + wasmtest.ReasonText},
		{"init-loops", Config{Path: write("l.wasm", modules["init-loops"]), Limits: Limits{InitTimeout: 20 * time.Millisecond}}, "deadline of 20ms exceeded"},
		{"bad-limits", Config{Path: write("a.wasm", allow), Limits: Limits{MemoryBytes: 100}}, "memory limit 100"},
	} {
		tc.cfg.Name = tc.name
		_, err := h.Load(ctx, tc.cfg)
		var le *LoadError
		if !errors.As(err, &le) {
			t.Errorf("%s: got %v, want a LoadError", tc.name, err)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) || !strings.Contains(msg, tc.cfg.Path) || !strings.Contains(msg, tc.name) {
			t.Errorf("%s: error %q should name the policy, the file and contain %q", tc.name, msg, tc.want)
		}
	}
	// The right digest loads.
	p, err := h.Load(ctx, Config{Name: "ok", Path: write("a.wasm", allow), SHA256: strings.ToUpper(good)})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
}

func TestReload(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	// The hammering goroutines never block, so the scheduler may preempt
	// one holding an instance for a whole time slice (10 ms) while the
	// others queue: a deadline that the machine cannot miss keeps this test
	// about reloads, not about scheduling.
	p := load(t, h, "allow", relaxed)
	req := testRequest(t)
	ctx := context.Background()

	// Callers hammer the policy while it is reloaded back and forth: every
	// call must get a real verdict, never an error.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var calls, failures atomic.Int64
	var lastFailure atomic.Value
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				d := p.Authorize(ctx, req)
				calls.Add(1)
				if d.Err != nil {
					failures.Add(1)
					lastFailure.Store(d.Err.Error())
				}
			}
		}()
	}
	for i := 0; i < 6; i++ {
		name := "deny"
		if i%2 == 1 {
			name = "allow"
		}
		cfg := Config{Path: name + ".wasm", Binary: modules[name]}
		relaxed(&cfg)
		if err := p.Reload(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d calls failed during reloads (%v)", failures.Load(), calls.Load(), lastFailure.Load())
	}
	if d := p.Authorize(ctx, req); d.Verdict != Allow {
		t.Fatalf("after reloads: %+v", d)
	}

	// A bad module leaves the old one serving.
	err := p.Reload(ctx, Config{Path: "bad.wasm", Binary: modules["missing-marker"]})
	if err == nil || !strings.Contains(err.Error(), "bad.wasm") {
		t.Fatalf("bad reload: %v", err)
	}
	if d := p.Authorize(ctx, req); d.Verdict != Allow || d.Err != nil {
		t.Fatalf("old module should keep serving: %+v", d)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if n := len(rec.reloads); n != 7 || rec.reloads[6] == nil {
		t.Fatalf("reload events: %v", rec.reloads)
	}
	if rec.errs[KindLoad] != 1 {
		t.Fatalf("load errors counted: %d", rec.errs[KindLoad])
	}
	if rec.discarded["retired"] == 0 {
		t.Fatal("old instances were not retired")
	}
}

func TestDegraded(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	p := load(t, h, "trap", func(c *Config) {
		c.Limits = Limits{DegradedErrors: 3, DegradedWindow: time.Minute, Instances: 1}
	})
	req := testRequest(t)
	for i := 0; i < 3; i++ {
		if d := p.Authorize(context.Background(), req); d.Kind != KindTrap || d.Verdict != Deny {
			t.Fatalf("call %d: %+v", i, d)
		}
	}
	if !p.Stats().Degraded {
		t.Fatal("policy not degraded after 3 traps")
	}
	rec.mu.Lock()
	got := rec.degraded
	rec.mu.Unlock()
	if len(got) != 1 || !got[0] {
		t.Fatalf("degraded events %v", got)
	}
	// Still degraded: calls keep getting the on_error verdict (instances
	// come back with backoff).
	if d := p.Authorize(context.Background(), req); d.Verdict != Deny {
		t.Fatalf("degraded call: %+v", d)
	}
}

func TestRecycle(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	p := load(t, h, "allow", func(c *Config) { c.Limits = Limits{RecycleCalls: 3, Instances: 1} })
	req := testRequest(t)
	for i := 0; i < 10; i++ {
		if d := p.Authorize(context.Background(), req); d.Verdict != Allow {
			t.Fatalf("call %d: %+v", i, d)
		}
	}
	rec.mu.Lock()
	n := rec.discarded["calls"]
	rec.mu.Unlock()
	if n != 3 {
		t.Fatalf("discarded after 3 calls: %d times, want 3", n)
	}
}

func TestConcurrentCalls(t *testing.T) {
	h := newHost(t, nil)
	p := load(t, h, "allow", func(c *Config) { relaxed(c); c.Limits.Instances = 2 })
	req := testRequest(t)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				if d := p.Authorize(context.Background(), req); d.Verdict != Allow {
					t.Errorf("got %+v", d)
					return
				}
			}
		}()
	}
	wg.Wait()
	if s := p.Stats(); s.Instances != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestCompilationCacheDir(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		h, err := NewHost(Options{CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		p, err := h.Load(context.Background(), Config{Name: "allow", Binary: modules["allow"]})
		if err != nil {
			t.Fatal(err)
		}
		p.Close()
		h.Close(context.Background())
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("cache dir is empty: %v", err)
	}
}

func TestCallAfterClose(t *testing.T) {
	h := newHost(t, nil)
	p, err := h.Load(context.Background(), Config{Name: "allow", Binary: modules["allow"]})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	done := make(chan Decision, 1)
	go func() { done <- p.Authorize(context.Background(), testRequest(t)) }()
	select {
	case d := <-done:
		if d.Verdict != Deny || !errors.Is(d.Err, errClosed) {
			t.Fatalf("%+v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a call on a closed policy hangs")
	}
	if err := p.Reload(context.Background(), Config{Binary: modules["allow"]}); !errors.Is(err, errClosed) {
		t.Fatalf("reload after close: %v", err)
	}
}
