package wasmpolicy

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/wasmhost"
	"github.com/metastore-dev/metastore/wasmhost/wasmtest"

	"github.com/metastore-dev/metastore/internal/policyabi"
)

func TestMain(m *testing.M) {
	code := m.Run()
	wasmtest.Cleanup()
	os.Exit(code)
}

func req(user string, ranges ...[2]string) *auth.Request {
	r := &auth.Request{}
	r.Reset(policyabi.OpRange, user)
	for _, kr := range ranges {
		var end []byte
		if kr[1] != "" {
			end = []byte(kr[1])
		}
		r.Add(policyabi.PermRead, []byte(kr[0]), end)
	}
	return r
}

func TestMatch(t *testing.T) {
	roles := func(u string) []string {
		if u == "ops" {
			return []string{"admin", "dev"}
		}
		return nil
	}
	pre := Match{Prefixes: [][]byte{[]byte("/t/")}}
	for _, tc := range []struct {
		m    Match
		r    *auth.Request
		want bool
	}{
		{pre, req("a", [2]string{"/t/x", ""}), true},
		{pre, req("a", [2]string{"/u/x", ""}), false},
		{pre, req("a", [2]string{"/a", "/z"}), true},     // spans the prefix
		{pre, req("a", [2]string{"/t0", "/z"}), false},   // starts past it
		{pre, req("a", [2]string{"/a", "/t/"}), false},   // ends before it
		{pre, req("a", [2]string{"\x00", "\x00"}), true}, // every key
		{pre, req("a", [2]string{"/u", "\x00"}), false},  // from /u on
		{pre, req("a", [2]string{"/x", "/a"}), false},    // empty range
		{pre, req("a", [2]string{"/u", ""}, [2]string{"/t/a", ""}), true},
		{Match{}, req("a"), true}, // no prefixes: every request
		{pre, req("a"), false},    // no ranges, prefixes set
		{Match{Users: []string{"b"}}, req("a", [2]string{"/t/x", ""}), false},
		{Match{Users: []string{"a"}}, req("a", [2]string{"/t/x", ""}), true},
		{Match{Roles: []string{"admin"}}, req("ops", [2]string{"/t/x", ""}), true},
		{Match{Roles: []string{"admin"}}, req("a", [2]string{"/t/x", ""}), false},
	} {
		if got := tc.m.Matches(tc.r, roles); got != tc.want {
			t.Errorf("%+v on %s %+v: %v, want %v", tc.m, tc.r.User, tc.r.Ranges, got, tc.want)
		}
	}
}

func load(t *testing.T, name string) *wasmhost.Policy {
	t.Helper()
	h, err := wasmhost.NewHost(wasmhost.Options{CacheDir: wasmtest.CacheDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	p, err := h.Load(context.Background(), wasmhost.Config{Name: name, Binary: wasmtest.Modules()[name]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestAuthorizer(t *testing.T) {
	var audited []wasmhost.Verdict
	env := &Env{Audit: func(_ string, _ wasmhost.Hook, d wasmhost.Decision) { audited = append(audited, d.Verdict) }}
	ctx := context.Background()
	r := req("a", [2]string{"/t/x", ""})

	deny := &Authorizer{Policy: load(t, "deny"), Env: env}
	d, err := deny.Authorize(ctx, r)
	var de *DenyError
	if d != auth.Deny || !errors.As(err, &de) || de.Reason != wasmtest.ReasonText || !errors.Is(err, auth.ErrPermissionDenied) {
		t.Fatalf("deny: %v %v", d, err)
	}
	// Audit: the verdict is reported, the chain decides.
	deny.Audit = true
	if d, err := deny.Authorize(ctx, r); d != auth.NoOpinion || err != nil || len(audited) != 1 || audited[0] != wasmhost.Deny {
		t.Fatalf("audit: %v %v %v", d, err, audited)
	}
	allow := &Authorizer{Policy: load(t, "allow"), Env: env}
	if d, err := allow.Authorize(ctx, r); d != auth.Allow || err != nil {
		t.Fatalf("allow: %v %v", d, err)
	}
	// Not matched: no call, no opinion.
	allow.Match = Match{Prefixes: [][]byte{[]byte("/other/")}}
	if d, _ := allow.Authorize(ctx, r); d != auth.NoOpinion {
		t.Fatalf("unmatched: %v", d)
	}
	// Chained before an authorizer that allows: the policy's deny wins.
	chain := auth.Chain{&Authorizer{Policy: load(t, "deny"), Env: env}, allow}
	if err := auth.Check(ctx, chain, r); !errors.As(err, &de) {
		t.Fatalf("chain: %v", err)
	}
}

func TestAdmitter(t *testing.T) {
	ctx := context.Background()
	env := &Env{}
	r := req("a", [2]string{"/t/x", ""})
	mut := &Admitter{Policy: load(t, "mutate"), Env: env}
	d, err := mut.Admit(ctx, r, policyabi.AdmitPut, []byte("\x0a\x04/t/x"))
	if err != nil || d.Verdict != wasmhost.Mutated || string(d.Mutation) != wasmtest.MutationText {
		t.Fatalf("mutate: %+v %v", d, err)
	}
	deny := &Admitter{Policy: load(t, "deny"), Env: env}
	_, err = deny.Admit(ctx, r, policyabi.AdmitPut, nil)
	var de *DenyError
	if !errors.As(err, &de) || de.Hook != wasmhost.HookAdmit || errors.Is(err, auth.ErrPermissionDenied) {
		t.Fatalf("deny: %v", err)
	}
	deny.Audit = true
	if d, err := deny.Admit(ctx, r, policyabi.AdmitPut, nil); err != nil || d.Verdict != wasmhost.Allow {
		t.Fatalf("audit: %+v %v", d, err)
	}
}

func BenchmarkAuthorizerAllow(b *testing.B) {
	h, _ := wasmhost.NewHost(wasmhost.Options{})
	defer h.Close(context.Background())
	p, err := h.Load(context.Background(), wasmhost.Config{Name: "allow", Binary: wasmtest.Modules()["allow"]})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	a := &Authorizer{Policy: p, Env: &Env{}, Match: Match{Prefixes: [][]byte{[]byte("/t/")}}}
	r := req("alice", [2]string{"/t/alice/x", ""})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if d, _ := a.Authorize(context.Background(), r); d != auth.Allow {
			b.Fatal(d)
		}
	}
}
