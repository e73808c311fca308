package main

import (
	"strings"
	"testing"

	"github.com/metastore-dev/metastore/policies/policy"
	pt "github.com/metastore-dev/metastore/policies/policy/policytest"
)

func TestValueRules(t *testing.T) {
	if err := pt.Init(`{"prefix": "/apps/", "max_value_bytes": 64, "json": true, "required_fields": ["name", "owner"]}`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key, value string
		deny       string
	}{
		{"/apps/a", `{"name": "a", "owner": "bob"}`, ""},
		{"/apps/a", `{"name": "a"}`, `lacks required field "owner"`},
		{"/apps/a", `{"name": "a", "owner": `, "not a JSON object"},
		{"/apps/a", `[1, 2]`, "not a JSON object"},
		{"/apps/a", `null`, "not a JSON object"},
		{"/apps/a", `{"name": "a", "owner": "` + strings.Repeat("x", 64) + `"}`, "over the 64-byte limit"},
		{"/other/a", `not json at all`, ""},
	} {
		r, msg := pt.Put("alice", tc.key, tc.value)
		v, reason, _ := pt.Admit(r, policy.AdmitPut, msg)
		if tc.deny == "" && v != policy.VerdictAllow || tc.deny != "" && (v != policy.VerdictDeny || !strings.Contains(reason, tc.deny)) {
			t.Errorf("%s=%s: got %v %q, want deny containing %q", tc.key, tc.value, v, reason, tc.deny)
		}
	}

	// A bad put hidden in the failure branch of a nested txn.
	bad := policy.PutRequest{Key: []byte("/apps/b"), Value: []byte("{}")}
	good := policy.PutRequest{Key: []byte("/apps/c"), Value: []byte(`{"name":"c","owner":"o"}`)}
	inner := policy.TxnRequest{Failure: []policy.RequestOp{{Put: &bad}}}
	txn := policy.TxnRequest{
		Compare: []policy.Compare{{Key: []byte("/apps/c"), Target: policy.TargetVersion, Union: 4}},
		Success: []policy.RequestOp{{Put: &good}, {Txn: &inner}},
	}
	req := pt.Request{Op: policy.OpTxn}
	if v, reason, _ := pt.Admit(req, policy.AdmitTxn, txn.Marshal(nil)); v != policy.VerdictDeny || !strings.Contains(reason, `"/apps/b"`) {
		t.Fatalf("nested txn: %v %q", v, reason)
	}
	txn.Success = txn.Success[:1]
	if v, reason, _ := pt.Admit(req, policy.AdmitTxn, txn.Marshal(nil)); v != policy.VerdictAllow {
		t.Fatalf("good txn: %v %q", v, reason)
	}
}

func TestSettingsRejected(t *testing.T) {
	defer pt.Init(`{}`)
	for _, s := range []string{`{"max_value_bytes": -1}`, `{"required_fields": ["a"]}`, `{`} {
		if err := pt.Init(s); err == nil {
			t.Errorf("settings %s accepted", s)
		}
	}
}
