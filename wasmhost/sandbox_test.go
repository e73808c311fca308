package wasmhost

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/internal/policyabi"
	"github.com/metastore-dev/metastore/wasmhost/wasmtest"
)

// TestInitDeadlines: a start function, an _initialize and a policy_init
// that never return (one spinning on host calls) each fail the load within
// the init deadline, with a LoadError naming the file and the deadline.
func TestInitDeadlines(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	const initTimeout = 100 * time.Millisecond
	for _, name := range []string{"start-loop", "initrt-loop", "init-loops", "start-random"} {
		start := time.Now()
		_, err := h.Load(context.Background(), Config{Name: name, Path: name + ".wasm", Binary: modules[name],
			Limits: Limits{InitTimeout: initTimeout}})
		took := time.Since(start)
		var le *LoadError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), "deadline of 100ms exceeded") ||
			!strings.Contains(err.Error(), name+".wasm") {
			t.Errorf("%s: got %v, want a LoadError naming the file and the deadline", name, err)
		}
		t.Logf("%s refused after %v (init deadline %v)", name, took, initTimeout)
		if took > 2*initTimeout+time.Second { // compile and cache included
			t.Errorf("%s: the load took %v", name, took)
		}
	}
	if n := rec.errCount(KindLoad); n != 4 {
		t.Errorf("load errors counted: %d, want 4", n)
	}
}

// TestDefaultInitDeadline: with no limits configured, a start function that
// never returns is stopped by the ABI's 1 s.
func TestDefaultInitDeadline(t *testing.T) {
	h := newHost(t, nil)
	start := time.Now()
	_, err := h.Load(context.Background(), Config{Name: "s", Path: "s.wasm", Binary: modules["start-loop"]})
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "deadline of 1s exceeded") {
		t.Fatalf("got %v", err)
	}
	t.Logf("start-loop refused after %v with the default 1s", took)
	if took > 3*time.Second {
		t.Fatalf("took %v", took)
	}
}

// TestReloadToHangingModule: reloads to modules whose start or init never
// return are refused while the old version serves, and later reloads
// still work; a reload abandoned by its context returns at once and does
// not hold up the next one.
func TestReloadToHangingModule(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	p := load(t, h, "allow", relaxed)
	req := testRequest(t)
	ctx := context.Background()
	for _, name := range []string{"start-loop", "initrt-loop", "init-loops", "start-random"} {
		err := p.Reload(ctx, Config{Path: name + ".wasm", Binary: modules[name], Limits: Limits{InitTimeout: 50 * time.Millisecond}})
		if err == nil || !strings.Contains(err.Error(), "deadline of 50ms exceeded") {
			t.Fatalf("reload to %s: %v", name, err)
		}
		if d := p.Authorize(ctx, req); d.Verdict != Allow || d.Err != nil {
			t.Fatalf("after the refused reload to %s: %+v", name, d)
		}
	}

	// Abandoned: the reload gives up when its context ends, long before the
	// module's init deadline.
	slow := Config{Path: "slow.wasm", Binary: modules["init-loops"], Limits: Limits{InitTimeout: 500 * time.Millisecond}}
	actx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	start := time.Now()
	err := p.Reload(actx, slow)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "load abandoned") || time.Since(start) > 400*time.Millisecond {
		t.Fatalf("abandoned reload: %v after %v", err, time.Since(start))
	}
	// The next reload does not wait for the abandoned load.
	start = time.Now()
	deny := Config{Path: "deny.wasm", Binary: modules["deny"]}
	relaxed(&deny)
	if err := p.Reload(ctx, deny); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 400*time.Millisecond {
		t.Errorf("the next reload waited %v", took)
	}
	if d := p.Authorize(ctx, req); d.Verdict != Deny || d.Err != nil {
		t.Fatalf("after the reload to deny: %+v", d)
	}
	rec.mu.Lock()
	n := len(rec.reloads)
	rec.mu.Unlock()
	if n != 6 {
		t.Errorf("reload events: %d, want 6", n)
	}
}

// TestHostCallsBounded: guests that loop over host calls whose work grows
// with an argument (1 MiB of random, 131,072 iovecs, 1,000 iovecs of 1 MiB
// to stderr, 21,000 poll subscriptions) are stopped near their deadline;
// a fuel budget stops them too.
func TestHostCallsBounded(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	req := testRequest(t)
	admitReq, err := AppendAdmission(nil, &Request{Op: policyabi.OpPut}, policyabi.AdmitPut, []byte("\x0a\x01k"))
	if err != nil {
		t.Fatal(err)
	}
	const deadline = 5 * time.Millisecond
	var worst time.Duration
	for _, name := range []string{"random-loop", "fdwrite-iovecs", "fdwrite-stderr", "poll-subs"} {
		p := load(t, h, name, func(c *Config) {
			c.Limits = Limits{AuthorizeTimeout: deadline, AdmitTimeout: deadline, Instances: 1}
		})
		for _, hook := range []Hook{HookAuthorize, HookAdmit} {
			r := req
			if hook == HookAdmit {
				r = admitReq
			}
			for i := 0; i < 5; i++ {
				start := time.Now()
				d := p.Call(context.Background(), hook, r)
				took := time.Since(start)
				worst = max(worst, took)
				if d.Kind != KindTimeout || d.Verdict != Deny {
					t.Fatalf("%s %v: %+v", name, hook, d)
				}
				if took > timingSlack*100*time.Millisecond {
					t.Errorf("%s %v: stopped after %v", name, hook, took)
				}
			}
		}
		// The same guest under a fuel budget and a long deadline.
		f := load(t, h, name, func(c *Config) {
			c.Name = name + "-fuel"
			c.Limits = Limits{AuthorizeTimeout: time.Minute, Fuel: 1_000_000, Instances: 1}
		})
		start := time.Now()
		if d := f.Authorize(context.Background(), req); d.Kind != KindFuel || d.Verdict != Deny ||
			!strings.Contains(d.Reason, "fuel budget of 1000000 units exhausted") {
			t.Fatalf("%s with a fuel budget: %+v", name, d)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s: the fuel budget stopped it after %v", name, took)
		}
	}
	t.Logf("worst hostile host-call loop against a %v deadline: %v", deadline, worst)
	if n := rec.errCount(KindFuel); n != 4 {
		t.Errorf("fuel errors counted: %d, want 4", n)
	}
}

// TestFuelBudget: the budget stops a guest loop deterministically; a
// well-behaved call stays under it.
func TestFuelBudget(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	req := testRequest(t)
	loop := load(t, h, "loop", func(c *Config) { c.Limits = Limits{AuthorizeTimeout: time.Minute, Fuel: 5_000_000} })
	if d := loop.Authorize(context.Background(), req); d.Kind != KindFuel || d.Err == nil || d.Verdict != Deny {
		t.Fatalf("loop: %+v", d)
	}
	allow := load(t, h, "allow", func(c *Config) { c.Limits = Limits{Fuel: 20_000} })
	for i := 0; i < 100; i++ {
		if d := allow.Authorize(context.Background(), req); d.Verdict != Allow || d.Err != nil {
			t.Fatalf("allow: %+v", d)
		}
	}
	if _, err := h.Load(context.Background(), Config{Name: "neg", Binary: modules["allow"], Limits: Limits{Fuel: -1}}); err == nil ||
		!strings.Contains(err.Error(), "fuel budget -1 is negative") {
		t.Fatalf("negative fuel: %v", err)
	}
	if rec.errCount(KindFuel) != 1 {
		t.Fatalf("fuel errors: %d", rec.errCount(KindFuel))
	}
}

// TestBadReasonKeepsDeny: a DENY whose reason is empty, oversized, not
// UTF-8, outside memory, or whose policy_reason traps or loops stays a DENY
// with a host-written reason, whatever on_error says; the problem is
// counted as bad_reason and never as a failed call.
func TestBadReasonKeepsDeny(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	req := testRequest(t)
	admitReq, err := AppendAdmission(nil, &Request{Op: policyabi.OpPut}, policyabi.AdmitPut, []byte("\x0a\x01k"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		module string
		hooks  []Hook
		says   string
	}{
		{"reason-empty", []Hook{HookAuthorize, HookAdmit}, "is empty"},
		{"oversized-reason", []Hook{HookAuthorize}, "over the 1024-byte limit"},
		{"reason-huge", []Hook{HookAuthorize, HookAdmit}, "over the 1024-byte limit"},
		{"reason-oob", []Hook{HookAuthorize}, "outside memory"},
		{"reason-not-utf8", []Hook{HookAuthorize, HookAdmit}, "not UTF-8"},
		{"reason-trap", []Hook{HookAuthorize, HookAdmit}, "unreachable"},
		{"reason-loop", []Hook{HookAuthorize, HookAdmit}, "deadline of 20ms exceeded"},
	}
	count := 0
	for _, tc := range cases {
		for _, onErr := range []OnError{FailClosed, FailOpen} {
			p := load(t, h, tc.module, func(c *Config) {
				c.OnError = onErr
				c.Limits = Limits{AuthorizeTimeout: 20 * time.Millisecond, AdmitTimeout: 20 * time.Millisecond, Instances: 1}
			})
			for _, hook := range tc.hooks {
				r := req
				if hook == HookAdmit {
					r = admitReq
				}
				for i := 0; i < 2; i++ { // the instance (kept or replaced) answers alike
					d := p.Call(context.Background(), hook, r)
					count++
					if d.Verdict != Deny || d.Err != nil || d.Kind != KindBadReason ||
						!strings.Contains(d.Reason, `denied by policy "`+tc.module+`"`) || !strings.Contains(d.Reason, tc.says) {
						t.Errorf("%s %v on_error %d: %+v", tc.module, hook, onErr, d)
					}
				}
			}
		}
	}
	if n := rec.errCount(KindBadReason); n != count {
		t.Errorf("bad reasons counted: %d, want %d", n, count)
	}
	for _, k := range []ErrorKind{KindBadResult, KindTrap, KindTimeout} {
		if n := rec.errCount(k); n != 0 {
			t.Errorf("%s counted %d times: a bad reason is not a failed call", k, n)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.discarded["error"] == 0 {
		t.Error("an instance whose policy_reason trapped was kept")
	}
}

// TestPoolWaitBounded: callers queueing for the one instance of a looping
// policy each end within the configured pool wait plus the deadline (the
// wait, then the call), not after the default second.
func TestPoolWaitBounded(t *testing.T) {
	h := newHost(t, nil)
	const deadline = 20 * time.Millisecond
	p := load(t, h, "loop", func(c *Config) {
		c.Limits = Limits{AuthorizeTimeout: deadline, PoolWait: deadline, Instances: 1}
	})
	req := testRequest(t)
	var mu sync.Mutex
	var worst time.Duration
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				start := time.Now()
				d := p.Authorize(context.Background(), req)
				took := time.Since(start)
				if d.Kind != KindTimeout {
					t.Errorf("got %+v", d)
				}
				mu.Lock()
				worst = max(worst, took)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("worst call of 6 callers on one looping instance, deadline %v: %v", deadline, worst)
	if worst > timingSlack*10*deadline {
		t.Errorf("a call took %v", worst)
	}
}

// TestGoHostCalls: a Go guest looping on crypto/rand (random_get), on
// stderr (fd_write) and on time.Sleep (poll_oneoff with the fake clock) is
// stopped by its deadline.
func TestGoHostCalls(t *testing.T) {
	h := newHost(t, nil)
	req := testRequest(t)
	for _, mode := range []string{"random", "stderr", "sleep"} {
		p := loadGo(t, h, "testdata/hostile/gohostile", `{"mode": "`+mode+`"}`, func(c *Config) {
			c.Name = mode
			c.Limits = Limits{MemoryBytes: 64 << 20, AuthorizeTimeout: 50 * time.Millisecond, Instances: 1}
		})
		var worst time.Duration
		for i := 0; i < 3; i++ {
			start := time.Now()
			d := p.Authorize(context.Background(), req)
			worst = max(worst, time.Since(start))
			if d.Kind != KindTimeout || d.Verdict != Deny {
				t.Fatalf("%s: %+v", mode, d)
			}
		}
		t.Logf("Go guest %s: stopped within %v of a 50ms deadline", mode, worst)
		if worst > time.Second {
			t.Errorf("%s: took %v", mode, worst)
		}
	}
}

var _ = wasmtest.Page1

// TestExamplePoliciesLink: every example policy, built by the standard Go
// toolchain for wasip1, links against the host's own WASI, initialises and
// answers.
func TestExamplePoliciesLink(t *testing.T) {
	h := newHost(t, nil)
	admitReq, err := AppendAdmission(nil, &Request{Op: policyabi.OpPut, User: "alice",
		Ranges: []Range{{Perm: policyabi.PermWrite, Key: []byte("/x")}}}, policyabi.AdmitPut, []byte("\x0a\x02/x\x12\x01v"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range []string{"policies/freeze", "policies/valuerules", "policies/stampowner", "policies/tenantisolation"} {
		p := loadGo(t, h, pkg, `{}`, relaxed)
		if d := p.Admit(context.Background(), admitReq); d.Err != nil {
			t.Errorf("%s: %+v", pkg, d)
		}
	}
}
