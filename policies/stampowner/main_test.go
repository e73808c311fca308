package main

import (
	"testing"

	"github.com/metastore-dev/metastore/policies/policy"
	pt "github.com/metastore-dev/metastore/policies/policy/policytest"
)

func TestStampPut(t *testing.T) {
	if err := pt.Init(`{"prefix": "/apps/", "field": "owner"}`); err != nil {
		t.Fatal(err)
	}
	r, msg := pt.Put("alice", "/apps/a", `{ "b": 1, "a": 2, "owner": "mallory" }`)
	v, reason, mut := pt.Admit(r, policy.AdmitPut, msg)
	if v != policy.VerdictMutated {
		t.Fatalf("got %v %q", v, reason)
	}
	p, err := policy.DecodePutRequest(mut)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Key) != "/apps/a" || string(p.Value) != `{"a":2,"b":1,"owner":"alice"}` {
		t.Fatalf("mutation %q=%q", p.Key, p.Value)
	}
	// Already stamped and normal: nothing to change.
	r, msg = pt.Put("alice", "/apps/a", `{"a":2,"b":1,"owner":"alice"}`)
	if v, _, _ := pt.Admit(r, policy.AdmitPut, msg); v != policy.VerdictAllow {
		t.Fatalf("normal value: %v", v)
	}
	// Not JSON, or outside the prefix: untouched.
	for _, kv := range [][2]string{{"/apps/b", "plain"}, {"/other/a", `{"a":1}`}} {
		r, msg = pt.Put("alice", kv[0], kv[1])
		if v, _, _ := pt.Admit(r, policy.AdmitPut, msg); v != policy.VerdictAllow {
			t.Fatalf("%s: %v", kv[0], v)
		}
	}
}

func TestStampTxn(t *testing.T) {
	if err := pt.Init(`{}`); err != nil {
		t.Fatal(err)
	}
	p1 := policy.PutRequest{Key: []byte("/apps/x"), Value: []byte(`{"v":1}`), Lease: 7}
	p2 := policy.PutRequest{Key: []byte("/other/y"), Value: []byte(`{"v":2}`)}
	txn := policy.TxnRequest{
		Compare: []policy.Compare{{Key: []byte("/apps/x"), Target: policy.TargetMod, Union: 6, Number: 0}},
		Success: []policy.RequestOp{{Put: &p1}},
		Failure: []policy.RequestOp{{Put: &p2}, {Range: &policy.RangeRequest{Key: []byte("/apps/x")}}},
	}
	v, _, mut := pt.Admit(pt.Request{Op: policy.OpTxn, User: "bob"}, policy.AdmitTxn, txn.Marshal(nil))
	if v != policy.VerdictMutated {
		t.Fatalf("got %v", v)
	}
	got, err := policy.DecodeTxnRequest(mut)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Compare) != 1 || got.Compare[0].Union != 6 || len(got.Success) != 1 || len(got.Failure) != 2 {
		t.Fatalf("txn shape changed: %+v", got)
	}
	if s := got.Success[0].Put; string(s.Value) != `{"owner":"bob","v":1}` || s.Lease != 7 {
		t.Fatalf("success put %q lease %d", s.Value, s.Lease)
	}
	if f := got.Failure[0].Put; string(f.Value) != `{"v":2}` {
		t.Fatalf("failure put outside the prefix changed: %q", f.Value)
	}
}
