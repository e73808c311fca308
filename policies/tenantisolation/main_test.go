package main

import (
	"testing"

	"github.com/metastore-dev/metastore/policies/policy"
	pt "github.com/metastore-dev/metastore/policies/policy/policytest"
)

func TestTenantIsolation(t *testing.T) {
	if err := pt.Init(`{"root": "/tenants/", "users_own_prefix": true, "admin_roles": ["root"]}`); err != nil {
		t.Fatal(err)
	}
	W, R := policy.PermWrite, policy.PermRead
	for _, tc := range []struct {
		name string
		req  pt.Request
		want policy.Verdict
	}{
		{"own key", pt.Request{User: "alice", Ranges: []policy.Range{pt.Key(W, "/tenants/alice/x")}}, policy.VerdictAllow},
		{"own prefix", pt.Request{User: "alice", Ranges: []policy.Range{pt.Prefix(R, "/tenants/alice/")}}, policy.VerdictAllow},
		{"other tenant", pt.Request{User: "alice", Ranges: []policy.Range{pt.Key(W, "/tenants/bob/x")}}, policy.VerdictDeny},
		{"name prefix trick", pt.Request{User: "al", Ranges: []policy.Range{pt.Key(R, "/tenants/alice/x")}}, policy.VerdictDeny},
		{"whole tenants tree", pt.Request{User: "alice", Ranges: []policy.Range{pt.Prefix(R, "/tenants/")}}, policy.VerdictDeny},
		{"from key", pt.Request{User: "alice", Ranges: []policy.Range{{Perm: R, Key: []byte("/tenants/alice/"), End: []byte{0}}}}, policy.VerdictDeny},
		{"range spilling over", pt.Request{User: "alice", Ranges: []policy.Range{{Perm: R, Key: []byte("/tenants/alice/a"), End: []byte("/tenants/alicf")}}}, policy.VerdictDeny},
		{"range up to prefix end", pt.Request{User: "alice", Ranges: []policy.Range{{Perm: R, Key: []byte("/tenants/alice/a"), End: []byte("/tenants/alice0")}}}, policy.VerdictAllow},
		{"all keys", pt.Request{User: "alice", Ranges: []policy.Range{{Perm: R, Key: []byte{0}, End: []byte{0}}}}, policy.VerdictDeny},
		{"outside tenants", pt.Request{User: "alice", Ranges: []policy.Range{pt.Key(W, "/config/x")}}, policy.VerdictNoOpinion},
		{"txn mixing own and other", pt.Request{Op: policy.OpTxn, User: "alice", Ranges: []policy.Range{pt.Key(R, "/tenants/alice/a"), pt.Key(W, "/tenants/bob/b")}}, policy.VerdictDeny},
		{"no user", pt.Request{Ranges: []policy.Range{pt.Key(R, "/tenants/x")}}, policy.VerdictDeny},
		{"admin", pt.Request{User: "ops", Roles: []string{"root"}, Ranges: []policy.Range{pt.Prefix(R, "/tenants/")}}, policy.VerdictNoOpinion},
	} {
		got, reason := pt.Authorize(tc.req)
		if got != tc.want {
			t.Errorf("%s: got %v (%s), want %v", tc.name, got, reason, tc.want)
		}
		if got == policy.VerdictDeny && reason == "" {
			t.Errorf("%s: deny without a reason", tc.name)
		}
	}
}

func TestSettings(t *testing.T) {
	defer pt.Init(`{}`)
	if err := pt.Init(`{"root": "/t"}`); err == nil {
		t.Fatal("root without a trailing slash accepted")
	}
	if err := pt.Init(`{"users_own_prefix": false, "root": "/tenants/"}`); err != nil {
		t.Fatal(err)
	}
	if v, _ := pt.Authorize(pt.Request{User: "alice", Ranges: []policy.Range{pt.Key(policy.PermWrite, "/tenants/alice/x")}}); v != policy.VerdictNoOpinion {
		t.Fatalf("users_own_prefix=false: %v", v)
	}
	if err := pt.Init(`not json`); err == nil {
		t.Fatal("bad JSON accepted")
	}
}

func BenchmarkAuthorizeNative(b *testing.B) {
	if err := pt.Init(`{}`); err != nil {
		b.Fatal(err)
	}
	req := pt.Request{User: "alice", Roles: []string{"dev"}, Ranges: []policy.Range{pt.Key(policy.PermWrite, "/tenants/alice/config/x")}}.Encode()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if v, _ := policy.RunAuthorize(req); v != policy.VerdictAllow {
			b.Fatal(v)
		}
	}
}
