package main

import (
	"strings"
	"testing"

	"github.com/metastore-dev/metastore/policies/policy"
	pt "github.com/metastore-dev/metastore/policies/policy/policytest"
)

func TestFreeze(t *testing.T) {
	put := func(key string) (pt.Request, []byte) { return pt.Put("alice", key, "v") }

	if err := pt.Init(`{"frozen": false, "prefixes": ["/config/"]}`); err != nil {
		t.Fatal(err)
	}
	r, msg := put("/config/a")
	if v, _, _ := pt.Admit(r, policy.AdmitPut, msg); v != policy.VerdictAllow {
		t.Fatalf("not frozen: %v", v)
	}

	if err := pt.Init(`{"frozen": true, "prefixes": ["/config/"], "message": "release freeze"}`); err != nil {
		t.Fatal(err)
	}
	if v, reason, _ := pt.Admit(r, policy.AdmitPut, msg); v != policy.VerdictDeny || !strings.Contains(reason, "release freeze") {
		t.Fatalf("frozen put: %v %q", v, reason)
	}
	r, msg = put("/apps/a")
	if v, _, _ := pt.Admit(r, policy.AdmitPut, msg); v != policy.VerdictAllow {
		t.Fatalf("put outside the frozen prefix: %v", v)
	}
	// A delete of a range that covers the frozen prefix.
	del := policy.DeleteRangeRequest{Key: []byte("/"), RangeEnd: []byte{0}}
	req := pt.Request{Op: policy.OpDeleteRange, Ranges: []policy.Range{{Perm: policy.PermWrite, Key: []byte("/"), End: []byte{0}}}}
	if v, _, _ := pt.Admit(req, policy.AdmitDeleteRange, del.Marshal(nil)); v != policy.VerdictDeny {
		t.Fatalf("delete over the frozen prefix: %v", v)
	}
	// A txn that only reads the frozen prefix is fine.
	txn := pt.Request{Op: policy.OpTxn, Ranges: []policy.Range{pt.Key(policy.PermRead, "/config/a"), pt.Key(policy.PermWrite, "/apps/b")}}
	if v, _, _ := pt.Admit(txn, policy.AdmitTxn, nil); v != policy.VerdictAllow {
		t.Fatalf("txn reading the frozen prefix: %v", v)
	}

	// Everything frozen.
	if err := pt.Init(`{"frozen": true}`); err != nil {
		t.Fatal(err)
	}
	if v, reason, _ := pt.Admit(r, policy.AdmitPut, msg); v != policy.VerdictDeny || reason != "writes are frozen" {
		t.Fatalf("global freeze: %v %q", v, reason)
	}
}
