package wasmhost

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/metastore-dev/metastore/wasmhost/wasmtest"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

func loadGo(t testing.TB, h *Host, pkg, settings string, mod func(*Config)) *Policy {
	t.Helper()
	cfg := Config{Name: pkg, Path: pkg + ".wasm", Binary: wasmtest.GoPolicy(t, pkg), Settings: []byte(settings)}
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

// relaxed gives calls a deadline that a loaded CI machine cannot miss by
// descheduling alone.
func relaxed(c *Config) {
	c.Limits.AuthorizeTimeout, c.Limits.AdmitTimeout = 2*time.Second, 2*time.Second
}

func encode(t testing.TB, r *Request) []byte {
	b, err := AppendRequest(nil, r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGoTenantIsolation runs the example policy built for wasip1 through
// the host.
func TestGoTenantIsolation(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	p := loadGo(t, h, "policies/tenantisolation", `{"root": "/tenants/", "users_own_prefix": true}`, relaxed)
	ctx := context.Background()
	own := encode(t, &Request{Op: policyabi.OpPut, User: "alice", Ranges: []Range{{Perm: policyabi.PermWrite, Key: []byte("/tenants/alice/x")}}})
	other := encode(t, &Request{Op: policyabi.OpRange, User: "alice", Ranges: []Range{{Perm: policyabi.PermRead, Key: []byte("/tenants/"), End: []byte("/tenants0")}}})
	outside := encode(t, &Request{Op: policyabi.OpRange, User: "alice", Ranges: []Range{{Perm: policyabi.PermRead, Key: []byte("/x")}}})
	for i := 0; i < 3; i++ {
		if d := p.Authorize(ctx, own); d.Verdict != Allow || d.Err != nil {
			t.Fatalf("own key: %+v", d)
		}
		if d := p.Authorize(ctx, other); d.Verdict != Deny || !strings.Contains(d.Reason, `may only access keys under "/tenants/alice/"`) {
			t.Fatalf("other tenants: %+v", d)
		}
		if d := p.Authorize(ctx, outside); d.Verdict != NoOpinion {
			t.Fatalf("outside: %+v", d)
		}
	}
	// The SDK exports policy_admit too; without a handler it denies with a
	// reason rather than letting writes through.
	if d := p.Admit(ctx, own); d.Verdict != Deny || !strings.Contains(d.Reason, "no admit handler") {
		t.Fatalf("admit without handler: %+v", d)
	}
	// Settings the policy rejects fail the load with its message.
	_, err := h.Load(ctx, Config{Name: "ti", Path: "ti.wasm", Binary: wasmtest.GoPolicy(t, "policies/tenantisolation"), Settings: []byte(`{"root": "x"}`)})
	if err == nil || !strings.Contains(err.Error(), `"root" must end with "/"`) || !strings.Contains(err.Error(), "ti.wasm") {
		t.Fatalf("bad settings: %v", err)
	}
}

// TestGoLogs checks a Go guest's log lines (at init and during a call)
// reach Events.Log.
func TestGoLogs(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	p := loadGo(t, h, "testdata/hostile/gohostile", `{"mode": "log"}`, relaxed)
	if d := p.Authorize(context.Background(), testRequest(t)); d.Verdict != Allow {
		t.Fatalf("%+v", d)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, want := range []string{"gohostile mode=log", "gohostile was called"} {
		found := false
		for _, l := range rec.logs {
			found = found || l == want
		}
		if !found {
			t.Errorf("guest log line %q not delivered: %q", want, rec.logs)
		}
	}
}

// TestGoHostileContained proves each misbehaviour of a real Go guest is
// contained: the call ends with the on_error verdict and the right kind,
// and the host keeps serving.
func TestGoHostileContained(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, rec)
	good := load(t, h, "allow", nil)
	req := testRequest(t)
	admitReq, _ := AppendAdmission(nil, &Request{Op: policyabi.OpPut}, policyabi.AdmitPut, []byte("\x0a\x01k"))
	limits := Limits{MemoryBytes: 64 << 20, AuthorizeTimeout: 50 * time.Millisecond, AdmitTimeout: 50 * time.Millisecond, Instances: 1}
	for _, tc := range []struct {
		mode string
		hook Hook
		kind ErrorKind
	}{
		{"loop", HookAuthorize, KindTimeout},
		{"panic", HookAuthorize, KindTrap},
		{"oom", HookAuthorize, KindOOM},
		{"exit", HookAuthorize, KindTrap},
		{"garbage", HookAuthorize, KindBadResult},
		{"bigreason", HookAuthorize, KindBadReason}, // the DENY stands
		{"bigmutation", HookAdmit, KindBadResult},
	} {
		p := loadGo(t, h, "testdata/hostile/gohostile", `{"mode": "`+tc.mode+`"}`, func(c *Config) {
			c.Limits, c.Name = limits, tc.mode
			if tc.mode != "loop" {
				// Only the loop is meant to time out; the rest (growing to
				// the memory cap, making 4 MB) may take a while under -race
				// on a busy machine.
				c.Limits.AuthorizeTimeout, c.Limits.AdmitTimeout = 10*time.Second, 10*time.Second
			}
			if tc.mode == "oom" {
				c.Limits.MemoryBytes = 24 << 20
			}
		})
		r := req
		if tc.hook == HookAdmit {
			r = admitReq
		}
		start := time.Now()
		d := p.Call(context.Background(), tc.hook, r)
		if d.Kind != tc.kind || d.Verdict != Deny || (d.Err == nil) != (tc.kind == KindBadReason) {
			t.Errorf("%s: got %+v (%v), want on_error deny with kind %s", tc.mode, d, d.Err, tc.kind)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: took %v", tc.mode, took)
		}
		if d := good.Authorize(context.Background(), req); d.Verdict != Allow {
			t.Fatalf("after %s: %+v", tc.mode, d)
		}
		p.Close()
	}
	// The panic message reached the log, tagged by the stderr writer.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	found := false
	for _, l := range rec.logs {
		found = found || strings.Contains(l, "assignment to entry in nil map")
	}
	if !found {
		t.Errorf("the Go panic did not reach the log: %q", rec.logs)
	}
}

// TestGoSandbox: a Go guest sees no files, no environment, no arguments,
// no network and a fake clock.
func TestGoSandbox(t *testing.T) {
	h := newHost(t, nil)
	p := loadGo(t, h, "testdata/hostile/gohostile", `{"mode": "sandbox"}`, relaxed)
	d := p.Authorize(context.Background(), testRequest(t))
	want := "fs=false dir=false env=0 args=0 year=2022 net=false"
	if d.Verdict != Deny || d.Reason != want {
		t.Fatalf("got %+v, want a deny with %q", d, want)
	}
}
